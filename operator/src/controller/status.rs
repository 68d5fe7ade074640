//! Pure status building: from a watch, the pods of its namespace and the latest findings per
//! pod, the counts, `needsRestart`, the per-container summary over every reporting pod, and
//! the detail of at most `report.maxPods` pods. Conditions are in [`super::conditions`], the
//! byte budget in [`crate::budget`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{
    AttachMode, Collect, ContainerReport, ContainerSummary, EnvironmentPolicy, ExistingPods,
    PodReport, ProcessInfo, ProcessWatch, ProcessWatchStatus,
};

use crate::budget::busiest_first;
use crate::expectations::drift::Comparison;
use crate::expectations::{Assessment, Judgement, PidFigures, Reporting};
use crate::metrics::{ContainerFigures, ContainerLabels};
use crate::report::store::{PodFindings, PodKey};
use crate::{admission, selector};

/// At most this many pod names in `needsRestart` and in `optedOut`; the counts are in the
/// Attached condition.
pub const NEEDS_RESTART_CAP: usize = 50;
/// At most this many distinct commands per summary entry, so the summary stays small.
pub const SUMMARY_COMMANDS_CAP: usize = 50;
/// An agent counts as reporting when its last report is younger than three intervals, and
/// never less than this, so one late report on a 1s interval does not flap the condition.
/// A status of up to 256 KiB rewritten every few seconds per watch only to move times is most
/// of what etcd would be written at rest; liveness is the Reporting condition's.
pub const MIN_REPORTED_AT_REFRESH: Duration = Duration::from_secs(300);
/// Pids a minute by which a pod's rate must move (and at least double or halve) to be shown
/// before its `reportedAt` moves: a fork storm shows at once, a few threads more or less do not.
const PID_RATE_STEP: u64 = 120;
const MIN_STALE_AFTER: Duration = Duration::from_secs(10);

/// A pod the watch selects, with what the controller knows about it.
#[derive(Clone, Debug)]
pub struct SelectedPod {
    pub pod: Arc<Pod>,
    /// Runs the agent: injected at creation or added as an ephemeral container.
    pub attached: bool,
    /// Its owner declined the agent (label `procwatch.dev/inject: "false"` or an explicit
    /// `shareProcessNamespace: false`): never gets it, and a restart does not change that.
    pub opted_out: bool,
    /// Being deleted: not counted, but it holds back the next eviction.
    pub terminating: bool,
    /// Its latest findings, when they come from this very pod (uid) and are fresh.
    pub findings: Option<Arc<PodFindings>>,
}

impl SelectedPod {
    pub fn name(&self) -> String {
        self.pod.name_any()
    }

    /// Selected, alive, not opted out and able to run the agent (not hostPID, not Windows),
    /// but without it. Only these are named in `needsRestart` and evicted.
    pub fn needs_agent(&self) -> bool {
        let unsupported = self.pod.spec.as_ref().and_then(admission::unsupported);
        !self.terminating && !self.attached && !self.opted_out && unsupported.is_none()
    }
}

/// How long after its last report an agent still counts as reporting.
pub fn stale_after(watch: &ProcessWatch) -> Duration {
    (watch.spec.interval.as_duration() * 3).max(MIN_STALE_AFTER)
}

/// Whether the pod runs the agent, as a container, a sidecar or an ephemeral container.
pub fn pod_runs_agent(pod: &Pod) -> bool {
    admission::pod_has_agent(pod)
        || pod.spec.as_ref().is_some_and(|spec| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == AGENT_CONTAINER_NAME)
        })
}

/// Whether the watch selects the pod; a malformed selector selects nothing (the controller
/// reports it as InvalidSpec).
pub fn selects(watch: &ProcessWatch, pod: &Pod) -> bool {
    watch.metadata.namespace == pod.metadata.namespace
        && selector::matches(&watch.spec.selector, pod.labels()).unwrap_or(false)
}

/// The pods the watch selects among `pods`, skipping finished ones, with their fresh findings.
pub fn select(
    watch: &ProcessWatch,
    pods: &[Arc<Pod>],
    findings: impl Fn(&PodKey) -> Option<Arc<PodFindings>>,
    now: Timestamp,
) -> Vec<SelectedPod> {
    let stale_after = stale_after(watch);
    let mut selected: Vec<SelectedPod> = pods
        .iter()
        .filter(|pod| selects(watch, pod))
        .filter(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|pod| {
            let key = PodKey::of(pod);
            let fresh = |f: &Arc<PodFindings>| {
                Some(f.uid.as_str()) == pod.metadata.uid.as_deref()
                    && now.duration_since(f.received_at).unsigned_abs() <= stale_after
            };
            SelectedPod {
                pod: pod.clone(),
                attached: pod_runs_agent(pod),
                opted_out: admission::declined(pod).is_some(),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                findings: findings(&key).filter(fresh),
            }
        })
        .collect();
    selected.sort_by_cached_key(SelectedPod::name);
    selected
}

/// What the conditions are made from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub namespace: String,
    pub mode: AttachMode,
    pub existing_pods: ExistingPods,
    /// A spec the API server accepted that the operator cannot use.
    pub invalid_spec: Option<String>,
    pub selected: u32,
    pub attached: u32,
    pub reporting: u32,
    pub processes: u64,
    /// Selected pods without the agent (not capped, unlike `needsRestart`).
    pub without_agent: Vec<String>,
    pub opted_out: u32,
    /// Attached pods whose agent has not reported lately.
    pub silent: Vec<String>,
    pub stale_after: Duration,
    /// Set by the eviction step: what it did or waits for.
    pub eviction: Option<String>,
    /// Pods without the agent that have no controller, so are never evicted.
    pub bare: Vec<String>,
    /// Set by the status writer: the API server refused the full status with this message.
    pub status_rejected: Option<String>,
    /// Set by the reconciler: the watch asks for ptrace and its namespace's Pod Security
    /// level forbids it, for this reason; the agents run without ptrace.
    pub ptrace_forbidden: Option<String>,
    /// `spec.expect` against the reports.
    pub compliant: Option<Judgement>,
    /// The requested files across the pods of each container name.
    pub in_sync: Option<Judgement>,
}

/// The status without conditions, the facts for them, and the per-container metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub status: ProcessWatchStatus,
    pub facts: Facts,
    pub figures: Vec<ContainerFigures>,
    /// Every violation and file comparison, for Events and metrics.
    pub assessment: Assessment,
    /// The pods the status lists in detail, or will once their next report keeps it.
    pub listing: BTreeSet<String>,
}

/// A reporting pod's containers as one watch covers them, and whether its status lists the pod
/// (the first `maxPods` reporting pods whose findings were kept whole).
struct Covered<'a> {
    pod: &'a SelectedPod,
    containers: Vec<ContainerReport>,
    listed: bool,
}

/// Builds the status of `watch` from its selected pods.
pub fn build(watch: &ProcessWatch, selected: &[SelectedPod]) -> Built {
    let spec = &watch.spec;
    let namespace = watch.namespace().unwrap_or_default();
    let invalid_spec = selector::validate(&spec.selector)
        .err()
        .map(|e| format!("spec.selector: {e}"));
    let alive: Vec<&SelectedPod> = selected.iter().filter(|p| !p.terminating).collect();
    let attached: Vec<&SelectedPod> = alive.iter().copied().filter(|p| p.attached).collect();
    let max_pods = usize::try_from(spec.report.max_pods).unwrap_or(usize::MAX);
    // Whole containers for the pods the status lists, and for every pod when expectations judge
    // processes; the others feed only counts, totals, commands and files.
    let mut to_list = max_pods;
    let reporting: Vec<Covered> = attached
        .iter()
        .filter_map(|p| {
            let findings = p.findings.as_ref()?;
            let listed = findings.detailed && to_list > 0;
            to_list -= usize::from(listed);
            let whole = listed || !spec.expect.is_empty();
            Some(Covered {
                pod: p,
                containers: covered_containers(watch, &findings.containers, whole),
                listed,
            })
        })
        .collect();
    let opted_out: Vec<String> = alive
        .iter()
        .filter(|p| p.opted_out && !p.attached)
        .map(|p| p.name())
        .collect();
    let without_agent: Vec<String> = alive
        .iter()
        .filter(|p| p.needs_agent())
        .map(|p| p.name())
        .collect();

    let figures = reporting
        .iter()
        .flat_map(
            |Covered {
                 pod, containers, ..
             }| {
                containers.iter().map(|c| {
                    let (cpu_millicores, memory_bytes) = container_totals(c);
                    ContainerFigures {
                        labels: ContainerLabels {
                            namespace: namespace.clone(),
                            watch: watch.name_any(),
                            pod: pod.name(),
                            container: c.name.clone(),
                        },
                        processes: u64::from(c.process_count),
                        cpu_millicores,
                        memory_bytes,
                    }
                })
            },
        )
        .collect();
    // The pods to list; those whose findings were kept compact (they were not listed when
    // they last reported) are listed from their next report on.
    let listing: BTreeSet<String> = reporting
        .iter()
        .take(max_pods)
        .map(|covered| covered.pod.name())
        .collect();
    let listed: Vec<&SelectedPod> = reporting
        .iter()
        .filter(|covered| covered.listed)
        .map(|covered| covered.pod)
        .collect();
    let restamp = restamps(watch, &listed);
    let assessment = Assessment::new(
        watch,
        &reporting
            .iter()
            .filter_map(
                |Covered {
                     pod, containers, ..
                 }| {
                    Some(Reporting {
                        pod: pod.name(),
                        findings: pod.findings.as_deref()?,
                        containers,
                    })
                },
            )
            .collect::<Vec<_>>(),
    );
    let status = ProcessWatchStatus {
        observed_generation: watch.metadata.generation,
        conditions: Vec::new(),
        selected_pods: count(alive.len()),
        attached_pods: count(attached.len()),
        reporting_pods: count(reporting.len()),
        processes: reporting
            .iter()
            .flat_map(|covered| &covered.containers)
            .map(|c| u64::from(c.process_count))
            .fold(0, u64::saturating_add),
        needs_restart: without_agent
            .iter()
            .take(NEEDS_RESTART_CAP)
            .cloned()
            .collect(),
        opted_out: opted_out.iter().take(NEEDS_RESTART_CAP).cloned().collect(),
        summary: summary(&reporting, &assessment.comparisons),
        violations: assessment.listed_violations(),
        // Last use of `reporting`: its containers move into the pod detail.
        pods: reporting
            .into_iter()
            .filter(|covered| covered.listed)
            .map(|covered| pod_report(watch, covered.pod, covered.containers, restamp))
            .collect(),
    };
    let facts = Facts {
        namespace,
        mode: spec.attach.mode,
        existing_pods: spec.attach.existing_pods,
        invalid_spec,
        selected: status.selected_pods,
        attached: status.attached_pods,
        reporting: status.reporting_pods,
        processes: status.processes,
        without_agent,
        opted_out: count(opted_out.len()),
        silent: attached
            .iter()
            .filter(|p| p.findings.is_none())
            .map(|p| p.name())
            .collect(),
        stale_after: stale_after(watch),
        eviction: None,
        bare: Vec::new(),
        status_rejected: None,
        ptrace_forbidden: None,
        compliant: assessment.compliant.clone(),
        in_sync: assessment.in_sync.clone(),
    };
    Built {
        status,
        facts,
        figures,
        assessment,
        listing,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The containers this watch reports (`spec.containers`, never the agent), with only what it
/// asked to collect: the agent collects the union of every watch selecting the pod, and one
/// watch must not show another's environment values or files. Not `whole`: only what the
/// counts, totals, summary and file comparison read ([`summarized`]).
fn covered_containers(
    watch: &ProcessWatch,
    containers: &[ContainerReport],
    whole: bool,
) -> Vec<ContainerReport> {
    let wanted = &watch.spec.containers;
    containers
        .iter()
        // Reports name only the pod's containers; a nameless one would be an empty list-map
        // key, which the API server refuses together with the whole status.
        .filter(|c| !c.name.is_empty() && c.name != AGENT_CONTAINER_NAME)
        .filter(|c| wanted.is_empty() || wanted.contains(&c.name))
        .map(|c| {
            if whole {
                project(c.clone(), &watch.spec.collect)
            } else {
                summarized(c, &watch.spec.collect)
            }
        })
        .collect()
}

/// A container as [`project`] would make it, with each process's pid, command and figures only:
/// copying a whole report of every pod a watch selects, to read its totals, was most of what a
/// reconcile allocated.
fn summarized(container: &ContainerReport, collect: &Collect) -> ContainerReport {
    let mut pids = HashSet::new();
    ContainerReport {
        name: container.name.clone(),
        container_id: container.container_id.clone(),
        process_count: container.process_count,
        cpu_millicores: container.cpu_millicores,
        memory_bytes: container.memory_bytes,
        processes: container
            .processes
            .iter()
            .filter(|p| pids.insert(p.pid))
            .map(|p| ProcessInfo {
                pid: p.pid,
                command: p.command.clone(),
                cpu_millicores: p.cpu_millicores,
                memory_bytes: p.memory_bytes,
                ..ProcessInfo::default()
            })
            .collect(),
        listening: Vec::new(),
        files: container
            .files
            .iter()
            .filter(|f| collect.files.contains(&f.path))
            .cloned()
            .collect(),
        libraries: Vec::new(),
        truncated: container.truncated,
        unreadable: Vec::new(),
    }
}

fn project(mut container: ContainerReport, collect: &Collect) -> ContainerReport {
    let mut pids = HashSet::new();
    // `processes` is a list-map keyed by pid: a duplicate would make the whole apply fail.
    container.processes.retain(|p| pids.insert(p.pid));
    for process in &mut container.processes {
        match collect.environment {
            EnvironmentPolicy::None => process.environment.clear(),
            EnvironmentPolicy::Names => {
                for variable in &mut process.environment {
                    if let Some((name, _)) = variable.split_once('=') {
                        *variable = name.to_string();
                    }
                }
            }
            EnvironmentPolicy::Redacted => {}
        }
        if !collect.open_files {
            process.open_files = None;
            process.open_file_kinds.clear();
        }
    }
    if !collect.sockets {
        container.listening.clear();
    }
    if !collect.libraries {
        container.libraries.clear();
    }
    container.files.retain(|f| collect.files.contains(&f.path));
    container.processes.sort_by(busiest_first);
    container
}

fn pod_report(
    watch: &ProcessWatch,
    pod: &SelectedPod,
    mut containers: Vec<ContainerReport>,
    restamp: bool,
) -> PodReport {
    let max_processes = usize::try_from(watch.spec.report.max_processes).unwrap_or(usize::MAX);
    for container in &mut containers {
        if container.processes.len() > max_processes {
            container.processes.truncate(max_processes);
            container.truncated = true;
        }
    }
    PodReport {
        name: pod.name(),
        uid: pod.pod.metadata.uid.clone(),
        node_name: pod.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        reported_at: pod
            .findings
            .as_ref()
            .map(|f| match shown_reported_at(watch, pod) {
                Some(shown) if !restamp => shown.clone(),
                _ => whole_seconds(f.received_at),
            }),
        containers,
        skipped: pod.findings.as_ref().map(|f| f.skipped).unwrap_or_default(),
        pids_allocated: None,
        pids_per_minute: None,
    }
}

/// The API stores times to the second; a finer time would differ from what it reads back.
pub fn whole_seconds(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

/// How stale a pod's `reportedAt` in the status may get before reports move it: two
/// intervals, and never under [`MIN_REPORTED_AT_REFRESH`]. At rest a watch's status is then
/// rewritten for times about once per refresh, not once per report.
pub fn reported_at_refresh(watch: &ProcessWatch) -> Duration {
    (watch.spec.interval.as_duration() * 2).max(MIN_REPORTED_AT_REFRESH)
}

/// The `reportedAt` the status shows for this very pod (same uid), if any.
fn shown_reported_at<'a>(watch: &'a ProcessWatch, pod: &SelectedPod) -> Option<&'a Time> {
    watch
        .status
        .as_ref()?
        .pods
        .iter()
        .find(|shown| shown.name == pod.name() && shown.uid == pod.pod.metadata.uid)?
        .reported_at
        .as_ref()
}

/// Whether the `reportedAt` shown can stay although a report came at `received`: it is younger
/// than `refresh` (and not ahead of it, as another replica's clock could make it).
///
/// A report moving `reportedAt` each time would rewrite the status on every report although
/// nothing else changed. Whether an agent still reports is told by the Reporting condition,
/// which the controller judges from its own memory of the reports.
pub fn keeps_reported_at(shown: Option<&Time>, received: Timestamp, refresh: Duration) -> bool {
    let latest = whole_seconds(received).0;
    shown.is_some_and(|shown| {
        shown.0 <= latest && latest.duration_since(shown.0).unsigned_abs() < refresh
    })
}

/// Whether the listed pods get the time of their latest report as `reportedAt`: all of them
/// together as soon as one's is due, so a watch's status is rewritten for times once per
/// refresh, not once per pod.
fn restamps(watch: &ProcessWatch, listed: &[&SelectedPod]) -> bool {
    let refresh = reported_at_refresh(watch);
    listed.iter().any(|pod| {
        pod.findings.as_ref().is_some_and(|f| {
            !keeps_reported_at(shown_reported_at(watch, pod), f.received_at, refresh)
        })
    })
}

/// The pid figures a listed pod shows: the latest whenever its `reportedAt` moves or its rate
/// moved by [`PID_RATE_STEP`], else those already shown. Threads and the agent's own scans
/// allocate a few pids between any two reports; showing each count would rewrite the status on
/// every report of a pod at rest.
pub fn shown_pid_figures(
    shown: Option<&PodReport>,
    reported_at: Option<&Time>,
    latest: &PidFigures,
) -> (Option<u64>, Option<u64>) {
    match shown {
        Some(shown)
            if shown.pids_allocated.is_some()
                && shown.reported_at.as_ref() == reported_at
                && !rate_moved(shown.pids_per_minute, latest.per_minute) =>
        {
            (shown.pids_allocated, shown.pids_per_minute)
        }
        _ => (Some(latest.total), latest.per_minute),
    }
}

fn rate_moved(shown: Option<u64>, latest: Option<u64>) -> bool {
    match (shown, latest) {
        (Some(shown), Some(latest)) => {
            let (low, high) = (shown.min(latest), shown.max(latest));
            high - low >= PID_RATE_STEP && high > low.saturating_mul(2)
        }
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

#[derive(Default)]
struct Totals {
    pods: u32,
    processes: u64,
    cpu_millicores: u64,
    memory_bytes: u64,
    commands: BTreeSet<String>,
}

/// CPU millicores and memory bytes of every process of a container, listed or not, as its
/// agent added them up. An agent older than these totals reports 0: then the listed processes'
/// sum, which the totals never fall below. Sums saturate: the figures come from the agent.
pub fn container_totals(container: &ContainerReport) -> (u64, u64) {
    let listed = |figure: fn(&ProcessInfo) -> u64| {
        container
            .processes
            .iter()
            .map(figure)
            .fold(0, u64::saturating_add)
    };
    let listed_cpu = listed(|p| p.cpu_millicores);
    let listed_memory = listed(|p| p.memory_bytes);
    (
        container.cpu_millicores.max(listed_cpu),
        container.memory_bytes.max(listed_memory),
    )
}

/// One entry per container name over every reporting pod, with its files compared.
fn summary(reporting: &[Covered], comparisons: &[Comparison]) -> Vec<ContainerSummary> {
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    for container in reporting.iter().flat_map(|covered| &covered.containers) {
        let entry = totals.entry(&container.name).or_default();
        entry.pods = entry.pods.saturating_add(1);
        entry.processes = entry
            .processes
            .saturating_add(u64::from(container.process_count));
        let (cpu_millicores, memory_bytes) = container_totals(container);
        entry.cpu_millicores = entry.cpu_millicores.saturating_add(cpu_millicores);
        entry.memory_bytes = entry.memory_bytes.saturating_add(memory_bytes);
        for process in &container.processes {
            entry.commands.insert(process.command.clone());
        }
    }
    totals
        .into_iter()
        .map(|(name, t)| ContainerSummary {
            container: name.to_string(),
            pods: t.pods,
            processes: t.processes,
            cpu_millicores: t.cpu_millicores,
            memory_bytes: t.memory_bytes,
            commands: t.commands.into_iter().take(SUMMARY_COMMANDS_CAP).collect(),
            file_variants: comparisons
                .iter()
                .filter(|c| c.container == name)
                .map(Comparison::to_status)
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{findings, nginx, pod, process, watch};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use procwatch_crds::{FileVariant, FileVariants, ReportLimits};

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn selected(
        watch: &ProcessWatch,
        pods: Vec<Pod>,
        reports: Vec<(String, PodFindings)>,
    ) -> Vec<SelectedPod> {
        let pods: Vec<Arc<Pod>> = pods.into_iter().map(Arc::new).collect();
        let reports: BTreeMap<String, Arc<PodFindings>> = reports
            .into_iter()
            .map(|(name, f)| (name, Arc::new(f)))
            .collect();
        select(watch, &pods, |key| reports.get(&key.name).cloned(), now())
    }

    #[test]
    fn counts_and_needs_restart() {
        let watch = watch("w");
        let mut finished = pod("done", "web", true);
        finished.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut opted_out = pod("opted", "web", false);
        opted_out.metadata.labels.as_mut().unwrap().insert(
            procwatch_crds::constants::INJECT_LABEL.into(),
            "false".into(),
        );
        let pods = vec![
            pod("a", "web", true),
            pod("b", "web", true),
            pod("c", "web", false),
            pod("other", "db", false),
            finished,
            opted_out,
        ];
        let reports = vec![findings(
            "a",
            now(),
            vec![nginx(vec![process(7, "nginx", 5)], "h1")],
        )];
        let built = build(&watch, &selected(&watch, pods, reports));
        let status = &built.status;
        assert_eq!(
            (
                status.selected_pods,
                status.attached_pods,
                status.reporting_pods,
                status.processes
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(status.needs_restart, ["c"]);
        assert_eq!(built.facts.silent, ["b"]);
        assert_eq!(built.facts.opted_out, 1);
        assert_eq!(status.opted_out, ["opted"]);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn stale_and_foreign_findings_do_not_count() {
        let watch = watch("w");
        let old = now() - k8s_openapi::jiff::SignedDuration::from_secs(31);
        let mut recreated = findings("b", now(), vec![]);
        recreated.1.uid = "uid-of-an-earlier-b".into();
        let built = build(
            &watch,
            &selected(
                &watch,
                vec![pod("a", "web", true), pod("b", "web", true)],
                vec![findings("a", old, vec![]), recreated],
            ),
        );
        assert_eq!(built.status.reporting_pods, 0);
        assert_eq!(built.facts.silent, ["a", "b"]);
    }

    #[test]
    fn compact_findings_count_everywhere_but_are_listed_from_their_next_report() {
        let mut watch = watch("w");
        watch.spec.report.max_pods = 2;
        let pods = (0..3).map(|i| pod(&format!("p{i}"), "web", true)).collect();
        let full = |i: usize| {
            let processes = vec![process(1, "nginx", 1), process(2, "worker", 10)];
            findings(&format!("p{i}"), now(), vec![nginx(processes, "h")])
        };
        // p0 reported before it was to be listed: kept compact.
        let (name, mut p0) = full(0);
        p0.containers = crate::report::store::compact(p0.containers);
        p0.detailed = false;
        let built = build(
            &watch,
            &selected(&watch, pods, vec![(name, p0), full(1), full(2)]),
        );
        let listed: Vec<&str> = built.status.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(listed, ["p1", "p2"], "only pods with their whole report");
        assert_eq!(
            built.listing,
            ["p0".to_string(), "p1".to_string()].into(),
            "p0's next report is kept whole"
        );
        let summary = &built.status.summary[0];
        assert_eq!(
            (summary.pods, summary.processes, summary.cpu_millicores),
            (3, 6, 33)
        );
        assert_eq!(summary.commands, ["nginx", "worker"]);
        assert_eq!(built.figures.len(), 3);
    }

    #[test]
    fn summary_covers_every_reporting_pod_and_pods_are_capped() {
        let mut watch = watch("w");
        watch.spec.report = ReportLimits {
            max_processes: 1,
            max_pods: 2,
            ..ReportLimits::default()
        };
        watch.spec.collect.files = vec!["/etc/nginx/nginx.conf".into()];
        let pods = (0..3).map(|i| pod(&format!("p{i}"), "web", true)).collect();
        let reports = (0..3)
            .map(|i| {
                let processes = vec![process(1, "nginx", 1), process(2, "worker", 10)];
                findings(
                    &format!("p{i}"),
                    now(),
                    vec![nginx(processes, if i == 0 { "h1" } else { "h2" })],
                )
            })
            .collect();
        let built = build(&watch, &selected(&watch, pods, reports));
        let status = built.status;
        assert_eq!(
            status.summary,
            [ContainerSummary {
                container: "nginx".into(),
                pods: 3,
                processes: 6,
                cpu_millicores: 33,
                memory_bytes: 6000,
                commands: vec!["nginx".into(), "worker".into()],
                file_variants: vec![FileVariants {
                    path: "/etc/nginx/nginx.conf".into(),
                    variants: 2,
                    fingerprints: vec![
                        FileVariant {
                            sha256: "h2".into(),
                            pods: 2,
                            pod_names: vec!["p1".into(), "p2".into()],
                            expected: false,
                        },
                        FileVariant {
                            sha256: "h1".into(),
                            pods: 1,
                            pod_names: vec!["p0".into()],
                            expected: false,
                        },
                    ],
                }],
            }]
        );
        assert_eq!(status.pods.len(), 2);
        let container = &status.pods[0].containers[0];
        assert_eq!(container.processes.len(), 1);
        assert_eq!(container.processes[0].command, "worker", "busiest first");
        assert!(container.truncated);
        assert_eq!(container.process_count, 2);
        assert_eq!(built.figures.len(), 3, "metrics cover every reporting pod");
        assert_eq!(status.pods[0].reported_at, Some(whole_seconds(now())));
        assert_eq!(status.pods[0].node_name.as_deref(), Some("node-1"));
    }

    #[test]
    fn reported_at_is_kept_while_younger_than_the_refresh() {
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).unwrap();
        let refresh = Duration::from_secs(30);
        let shown = whole_seconds(at(0));
        assert!(!keeps_reported_at(None, at(7), refresh));
        assert!(keeps_reported_at(Some(&shown), at(15), refresh));
        assert!(keeps_reported_at(Some(&shown), at(29), refresh));
        assert!(!keeps_reported_at(Some(&shown), at(30), refresh));
        // A time shown from the future (another replica's clock) is replaced.
        assert!(!keeps_reported_at(
            Some(&whole_seconds(at(60))),
            at(30),
            refresh
        ));
    }

    #[test]
    fn the_refresh_is_two_intervals_and_at_least_five_minutes() {
        let mut watch = watch("w");
        assert_eq!(reported_at_refresh(&watch), MIN_REPORTED_AT_REFRESH);
        watch.spec.interval = "10m".parse().unwrap();
        assert_eq!(reported_at_refresh(&watch), Duration::from_secs(1200));
    }

    #[test]
    fn pid_figures_follow_reported_at_or_a_moved_rate() {
        let stamp = whole_seconds(now());
        let shown = PodReport {
            name: "a".into(),
            reported_at: Some(stamp.clone()),
            pids_allocated: Some(40),
            pids_per_minute: Some(12),
            ..PodReport::default()
        };
        let latest = |total, per_minute| PidFigures {
            total,
            per_minute,
            since_last: 0,
        };
        // The agent's scans and a few threads: kept until reportedAt moves.
        assert_eq!(
            shown_pid_figures(Some(&shown), Some(&stamp), &latest(44, Some(16))),
            (Some(40), Some(12))
        );
        let later = whole_seconds(now() + Duration::from_secs(300));
        assert_eq!(
            shown_pid_figures(Some(&shown), Some(&later), &latest(44, Some(16))),
            (Some(44), Some(16))
        );
        // A fork storm shows at once; so does its end.
        assert_eq!(
            shown_pid_figures(Some(&shown), Some(&stamp), &latest(4052, Some(64_000))),
            (Some(4052), Some(64_000))
        );
        let storm = PodReport {
            pids_allocated: Some(4052),
            pids_per_minute: Some(64_000),
            ..shown.clone()
        };
        assert_eq!(
            shown_pid_figures(Some(&storm), Some(&stamp), &latest(4056, Some(16))),
            (Some(4056), Some(16))
        );
        // The first rate, and a pod not shown before.
        let first = PodReport {
            pids_per_minute: None,
            ..shown.clone()
        };
        assert_eq!(
            shown_pid_figures(Some(&first), Some(&stamp), &latest(44, Some(16))),
            (Some(44), Some(16))
        );
        assert_eq!(
            shown_pid_figures(None, Some(&stamp), &latest(0, None)),
            (Some(0), None)
        );
    }

    #[test]
    fn the_same_findings_reported_again_build_the_same_status_until_the_refresh() {
        let mut watch = watch("w");
        let pods: Vec<Arc<Pod>> = ["a", "b"]
            .into_iter()
            .map(|name| Arc::new(pod(name, "web", true)))
            .collect();
        // Each pod's latest report, `a_at` and `b_at` seconds after `now()`.
        let build_at = |watch: &ProcessWatch, a_at: u64, b_at: u64| {
            let reports: BTreeMap<String, Arc<PodFindings>> = [("a", a_at), ("b", b_at)]
                .into_iter()
                .map(|(name, after)| {
                    let at = now() + Duration::from_secs(after);
                    let (name, f) =
                        findings(name, at, vec![nginx(vec![process(1, "nginx", 1)], "h")]);
                    (name, Arc::new(f))
                })
                .collect();
            let at = now() + Duration::from_secs(a_at.max(b_at));
            build(
                watch,
                &select(watch, &pods, |key| reports.get(&key.name).cloned(), at),
            )
            .status
        };
        let first = build_at(&watch, 0, 5);
        watch.status = Some(first.clone());
        let refresh = reported_at_refresh(&watch).as_secs();
        assert_eq!(
            build_at(&watch, 10, 15),
            first,
            "no rewrite for times alone"
        );
        assert_eq!(build_at(&watch, refresh - 1, refresh + 2), first);
        // `a` is due: both pods get the time of their latest report, in one rewrite.
        let restamped = build_at(&watch, refresh, refresh + 2);
        let times: Vec<Option<Time>> = restamped
            .pods
            .iter()
            .map(|p| p.reported_at.clone())
            .collect();
        assert_eq!(
            times,
            [
                Some(whole_seconds(now() + Duration::from_secs(refresh))),
                Some(whole_seconds(now() + Duration::from_secs(refresh + 2))),
            ]
        );
    }

    #[test]
    fn summary_and_metrics_count_the_processes_the_agent_did_not_list() {
        let watch = watch("w");
        // The agent listed its busiest process of 40; the totals cover all 40.
        let mut listed = nginx(vec![process(1, "nginx", 10)], "h");
        listed.process_count = 40;
        listed.cpu_millicores = 25;
        listed.memory_bytes = 40_000;
        // An agent older than the totals reports none: its listed processes are the figure.
        let mut old_agent = nginx(vec![process(1, "nginx", 10), process(2, "nginx", 5)], "h");
        old_agent.cpu_millicores = 0;
        old_agent.memory_bytes = 0;
        let pods = vec![pod("a", "web", true), pod("b", "web", true)];
        let reports = vec![
            findings("a", now(), vec![listed]),
            findings("b", now(), vec![old_agent]),
        ];
        let built = build(&watch, &selected(&watch, pods, reports));
        let summary = &built.status.summary[0];
        assert_eq!(
            (
                summary.processes,
                summary.cpu_millicores,
                summary.memory_bytes
            ),
            (42, 25 + 15, 40_000 + 2000)
        );
        let figures: Vec<(u64, u64, u64)> = built
            .figures
            .iter()
            .map(|f| (f.processes, f.cpu_millicores, f.memory_bytes))
            .collect();
        assert_eq!(figures, [(40, 25, 40_000), (2, 15, 2000)]);
    }

    #[test]
    fn the_pods_not_listed_count_in_the_summary_as_if_they_were() {
        let mut watch = watch("w");
        watch.spec.collect.files = vec!["/etc/nginx/nginx.conf".into()];
        let container = |pid: i32, command: &str, cpu: u64, sha: &str| {
            let mut c = nginx(
                vec![process(pid, command, cpu), process(pid + 1, "sh", 1)],
                sha,
            );
            c.process_count = 5;
            c
        };
        let pods = vec![
            pod("a", "web", true),
            pod("b", "web", true),
            pod("c", "web", true),
        ];
        let reports = vec![
            findings("a", now(), vec![container(1, "nginx", 10, "h1")]),
            findings("b", now(), vec![container(1, "nginx", 20, "h2")]),
            findings("c", now(), vec![container(1, "envoy", 30, "h1")]),
        ];
        let built_with = |max_pods: u32| {
            let mut watch = watch.clone();
            watch.spec.report.max_pods = max_pods;
            build(&watch, &selected(&watch, pods.clone(), reports.clone()))
        };
        let (all, one) = (built_with(3), built_with(1));
        assert_eq!((all.status.pods.len(), one.status.pods.len()), (3, 1));
        assert_eq!(one.status.pods[0], all.status.pods[0]);
        assert_eq!(one.status.summary, all.status.summary);
        assert_eq!(one.status.processes, all.status.processes);
        assert_eq!(one.figures, all.figures);
        assert_eq!(one.assessment.comparisons, all.assessment.comparisons);
        assert_eq!(one.facts.in_sync, all.facts.in_sync);
    }

    #[test]
    fn pods_kept_compact_show_every_command_in_the_summary() {
        let watch = watch("w");
        let container = nginx(
            vec![
                process(1, "nginx", 10),
                process(2, "sh", 1),
                process(3, "envoy", 2),
            ],
            "h1",
        );
        let (name, mut kept) = findings("a", now(), vec![container.clone()]);
        kept.containers = crate::report::store::compact(kept.containers);
        kept.detailed = false;
        let compact = build(
            &watch,
            &selected(&watch, vec![pod("a", "web", true)], vec![(name, kept)]),
        );
        let whole = build(
            &watch,
            &selected(
                &watch,
                vec![pod("a", "web", true)],
                vec![findings("a", now(), vec![container])],
            ),
        );
        assert_eq!(compact.status.summary, whole.status.summary);
    }

    #[test]
    fn only_what_the_watch_asked_for_is_shown() {
        let mut watch = watch("w");
        watch.spec.containers = vec!["nginx".into()];
        let mut sidecar = nginx(vec![process(9, "envoy", 1)], "h");
        sidecar.name = "envoy".into();
        let mut agent = nginx(vec![process(3, "procwatch-agent", 1)], "h");
        agent.name = AGENT_CONTAINER_NAME.into();
        let duplicated = vec![process(7, "nginx", 1), process(7, "nginx", 1)];
        let reports = vec![findings(
            "a",
            now(),
            vec![nginx(duplicated, "h"), sidecar, agent],
        )];
        let built = build(
            &watch,
            &selected(&watch, vec![pod("a", "web", true)], reports),
        );
        let containers = &built.status.pods[0].containers;
        assert_eq!(containers.len(), 1, "only spec.containers, never the agent");
        let nginx = &containers[0];
        assert_eq!(nginx.processes.len(), 1, "pids are unique");
        assert_eq!(
            nginx.processes[0].environment,
            ["PATH", "SECRET"],
            "names only"
        );
        assert!(nginx.libraries.is_empty(), "libraries were not asked for");
        assert!(nginx.files.is_empty(), "no file was asked for");
        assert_eq!(nginx.processes[0].open_files, Some(3));

        watch.spec.collect.environment = EnvironmentPolicy::None;
        watch.spec.collect.open_files = false;
        let reports = vec![findings(
            "a",
            now(),
            vec![super::tests::nginx(vec![process(7, "nginx", 1)], "h")],
        )];
        let built = build(
            &watch,
            &selected(&watch, vec![pod("a", "web", true)], reports),
        );
        let process = &built.status.pods[0].containers[0].processes[0];
        assert!(process.environment.is_empty());
        assert_eq!(process.open_files, None);
    }

    #[test]
    fn invalid_selector_is_a_fact_not_a_failure() {
        let mut watch = watch("w");
        watch.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "Equals".into(),
            values: Some(vec!["web".into()]),
        }]);
        let built = build(
            &watch,
            &selected(&watch, vec![pod("a", "web", true)], vec![]),
        );
        assert_eq!(built.status.selected_pods, 0);
        assert!(built.facts.invalid_spec.unwrap().contains("Equals"));
    }

    /// A pod with `shareProcessNamespace: false` is its owner's decision, listed under
    /// `optedOut`; hostPID and Windows pods can never run the agent. None needs a restart.
    #[test]
    fn declined_and_unsupported_pods_never_need_restart() {
        let watch = watch("w");
        let with_spec = |name: &str, spec: serde_json::Value| {
            let mut p = pod(name, "web", false);
            let mut full = serde_json::to_value(p.spec.take().unwrap()).unwrap();
            full.as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            p.spec = Some(serde_json::from_value(full).unwrap());
            p
        };
        let pods = vec![
            with_spec(
                "declined",
                serde_json::json!({"shareProcessNamespace": false}),
            ),
            with_spec("host", serde_json::json!({"hostPID": true})),
            with_spec("win-os", serde_json::json!({"os": {"name": "windows"}})),
            with_spec(
                "win-node",
                serde_json::json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
            ),
            pod("missing", "web", false),
        ];
        let selected = selected(&watch, pods, vec![]);
        let needing: Vec<_> = selected
            .iter()
            .filter(|p| p.needs_agent())
            .map(SelectedPod::name)
            .collect();
        assert_eq!(needing, ["missing"]);
        let built = build(&watch, &selected);
        assert_eq!(built.status.needs_restart, ["missing"]);
        assert_eq!(built.status.opted_out, ["declined"]);
        assert_eq!(built.facts.opted_out, 1);
        assert_eq!(built.status.selected_pods, 5);
    }

    #[test]
    fn needs_restart_is_capped() {
        let watch = watch("w");
        let pods = (0..NEEDS_RESTART_CAP + 5)
            .map(|i| pod(&format!("p{i:03}"), "web", false))
            .collect();
        let built = build(&watch, &selected(&watch, pods, vec![]));
        assert_eq!(built.status.needs_restart.len(), NEEDS_RESTART_CAP);
        assert_eq!(built.facts.without_agent.len(), NEEDS_RESTART_CAP + 5);
    }
}
