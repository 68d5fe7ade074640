//! Pure parts of handling a report: naming the reported containers from the pod the operator
//! watches, and the answer to the agent, merged from every watch that selects its pod.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::report::{CollectRequest, ContainerIdentity, ReportResponse};
use procwatch_crds::{ContainerReport, EnvironmentPolicy, Interval, ProcessWatch};

/// The runtime ID without its scheme: `containerd://3f2a…` and `3f2a…` are the same container.
fn bare_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status.iter().flat_map(|status| {
        [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
    })
}

fn container_names(pod: &Pod) -> BTreeSet<&str> {
    let Some(spec) = &pod.spec else {
        return BTreeSet::new();
    };
    let regular = spec.containers.iter().map(|c| c.name.as_str());
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str());
    regular.chain(init).chain(ephemeral).collect()
}

/// The pod's containers, name and runtime ID, as the agent needs them to group processes; the
/// agent's own container is left out, and so are containers that have not started yet.
pub fn pod_containers(pod: &Pod) -> Vec<ContainerIdentity> {
    let mut containers: Vec<ContainerIdentity> = statuses(pod)
        .filter(|status| status.name != AGENT_CONTAINER_NAME)
        .filter_map(|status| {
            let id = status.container_id.as_deref().filter(|id| !id.is_empty())?;
            Some(ContainerIdentity {
                name: status.name.clone(),
                container_id: id.to_string(),
            })
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    containers
}

/// Whether every container of the pod but the agent has finished for good, so that an agent
/// running as a plain container must exit for the pod to complete (a Job's pod on a server
/// without native sidecars). Only restart policies that leave finished containers finished
/// qualify, and only a regular agent container: the kubelet stops a native sidecar itself.
pub fn workload_finished(pod: &Pod) -> bool {
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return false;
    };
    let failures_restart = match spec.restart_policy.as_deref() {
        Some("Never") => false,
        Some("OnFailure") => true,
        // Always, also when unset: the kubelet restarts whatever exits.
        _ => return false,
    };
    if !spec
        .containers
        .iter()
        .any(|c| c.name == AGENT_CONTAINER_NAME)
    {
        return false;
    }
    let terminated: HashMap<&str, i32> = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|status| {
            let terminated = status.state.as_ref()?.terminated.as_ref()?;
            Some((status.name.as_str(), terminated.exit_code))
        })
        .collect();
    let mut workload = spec
        .containers
        .iter()
        .filter(|c| c.name != AGENT_CONTAINER_NAME)
        .peekable();
    workload.peek().is_some()
        && workload.all(|container| {
            terminated
                .get(container.name.as_str())
                .is_some_and(|&exit_code| !failures_restart || exit_code == 0)
        })
}

/// Names the reported containers from the pod's statuses by container ID (the agent may not
/// have known the names yet). A container the pod does not have (the sandbox, a finished
/// one) and the agent's own container are dropped.
pub fn rename_containers(reported: Vec<ContainerReport>, pod: &Pod) -> Vec<ContainerReport> {
    let by_id: HashMap<&str, &ContainerStatus> = statuses(pod)
        .filter_map(|status| Some((bare_id(status.container_id.as_deref()?), status)))
        .collect();
    let names = container_names(pod);
    let mut renamed: Vec<(bool, ContainerReport)> = reported
        .into_iter()
        .filter_map(|mut container| {
            let status = container
                .container_id
                .as_deref()
                .and_then(|id| by_id.get(bare_id(id)));
            match status {
                Some(status) => {
                    container.name = status.name.clone();
                    container.container_id = status.container_id.clone();
                }
                None if names.contains(container.name.as_str()) => {}
                None => return None,
            }
            (container.name != AGENT_CONTAINER_NAME).then_some((status.is_some(), container))
        })
        .collect();
    // Two entries for one name (a restarted container seen twice, or one the agent named
    // itself): the one matched by ID wins.
    renamed.sort_by(|(a_by_id, a), (b_by_id, b)| a.name.cmp(&b.name).then(b_by_id.cmp(a_by_id)));
    renamed.dedup_by(|(_, later), (_, first)| later.name == first.name);
    renamed
        .into_iter()
        .map(|(_, container)| container)
        .collect()
}

/// The answer for a pod that the given watches select: the shortest interval, the union of
/// what they collect, the largest process limit, and the pod's containers.
pub fn merge(watches: &[&ProcessWatch], pod: &Pod) -> ReportResponse {
    let Some(interval) = watches.iter().map(|watch| watch.spec.interval).min() else {
        return unwatched(pod);
    };
    ReportResponse {
        watched: true,
        interval_seconds: interval.as_duration().as_secs(),
        collect: collect_request(watches),
        containers: pod_containers(pod),
        workload_finished: workload_finished(pod),
    }
}

/// The union of what `watches` collect, and the largest process limit. The webhook gives the
/// same to the agent at start, so that its first report is as complete as the later ones.
pub fn collect_request(watches: &[&ProcessWatch]) -> CollectRequest {
    let mut collect = CollectRequest {
        environment: EnvironmentPolicy::None,
        open_files: false,
        sockets: false,
        libraries: false,
        files: Vec::new(),
        max_processes: 0,
        max_file_bytes: 0,
    };
    let mut files = BTreeSet::new();
    for watch in watches {
        let spec = &watch.spec;
        collect.environment = collect.environment.max(spec.collect.environment);
        collect.open_files |= spec.collect.open_files;
        collect.sockets |= spec.collect.sockets;
        collect.libraries |= spec.collect.libraries;
        files.extend(spec.collect.files.iter().cloned());
        collect.max_processes = collect.max_processes.max(spec.report.max_processes);
        collect.max_file_bytes = collect.max_file_bytes.max(spec.collect.max_file_bytes);
    }
    collect.files = files.into_iter().collect();
    collect
}

/// The answer for a pod no watch selects: the agent stops reporting (and exits once the pod's
/// workload has finished, as when it is watched).
pub fn unwatched(pod: &Pod) -> ReportResponse {
    ReportResponse {
        watched: false,
        interval_seconds: Interval::DEFAULT.as_duration().as_secs(),
        collect: CollectRequest::default(),
        containers: Vec::new(),
        workload_finished: workload_finished(pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, PodSpec,
        PodStatus,
    };
    use procwatch_crds::{Collect, ProcessWatchSpec, ReportLimits};

    fn status(name: &str, id: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: id.map(String::from),
            ..ContainerStatus::default()
        }
    }

    fn pod() -> Pod {
        let container = |name: &str| Container {
            name: name.into(),
            ..Container::default()
        };
        Pod {
            spec: Some(PodSpec {
                containers: vec![container("nginx"), container("exporter")],
                init_containers: Some(vec![container(AGENT_CONTAINER_NAME)]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![
                    status("nginx", Some("containerd://aaa")),
                    status("exporter", None),
                ]),
                init_container_statuses: Some(vec![status(
                    AGENT_CONTAINER_NAME,
                    Some("containerd://ccc"),
                )]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn reported(name: &str, id: Option<&str>) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            container_id: id.map(String::from),
            ..ContainerReport::default()
        }
    }

    #[test]
    fn containers_are_named_from_the_pod_by_id() {
        let renamed = rename_containers(
            vec![
                reported("nginx", None),
                reported("containerd-aaa", Some("aaa")),
                reported("exporter", None),
                reported("unknown", Some("containerd://ccc")),
                reported("pause", Some("containerd://ddd")),
                reported("host", None),
            ],
            &pod(),
        );
        let names: Vec<&str> = renamed.iter().map(|c| c.name.as_str()).collect();
        // aaa is nginx; the agent (ccc), the sandbox (ddd) and "host" are not app containers.
        assert_eq!(names, ["exporter", "nginx"]);
        assert_eq!(
            renamed[1].container_id.as_deref(),
            Some("containerd://aaa"),
            "the entry matched by ID wins, with the pod's own spelling of the ID"
        );
    }

    #[test]
    fn pod_containers_exclude_the_agent_and_unstarted_ones() {
        assert_eq!(
            pod_containers(&pod()),
            [ContainerIdentity {
                name: "nginx".into(),
                container_id: "containerd://aaa".into()
            }]
        );
    }

    fn watch(interval: &str, collect: Collect, max_processes: u32) -> ProcessWatch {
        ProcessWatch::new(
            "w",
            ProcessWatchSpec {
                selector: Default::default(),
                containers: vec![],
                interval: interval.parse().unwrap(),
                attach: Default::default(),
                collect,
                report: ReportLimits {
                    max_processes,
                    max_pods: 10,
                    ..ReportLimits::default()
                },
                agent: Default::default(),
                expect: vec![],
            },
        )
    }

    #[test]
    fn response_merges_every_selecting_watch() {
        let a = watch(
            "30s",
            Collect {
                environment: EnvironmentPolicy::None,
                open_files: false,
                sockets: true,
                libraries: false,
                files: vec!["/etc/b".into(), "/etc/a".into()],
                max_file_bytes: 1024,
            },
            5,
        );
        let b = watch(
            "10s",
            Collect {
                environment: EnvironmentPolicy::Redacted,
                open_files: true,
                sockets: false,
                libraries: true,
                files: vec!["/etc/a".into()],
                ..Collect::default()
            },
            50,
        );
        let response = merge(&[&a, &b], &pod());
        assert!(response.watched);
        assert_eq!(response.interval_seconds, 10);
        assert_eq!(
            response.collect,
            CollectRequest {
                environment: EnvironmentPolicy::Redacted,
                open_files: true,
                sockets: true,
                libraries: true,
                files: vec!["/etc/a".into(), "/etc/b".into()],
                max_processes: 50,
                max_file_bytes: procwatch_crds::spec::DEFAULT_MAX_FILE_BYTES,
            }
        );
        assert_eq!(response.containers.len(), 1);
    }

    #[test]
    fn no_watch_means_stop() {
        let response = merge(&[], &pod());
        assert!(!response.watched);
        assert!(response.containers.is_empty());
    }

    /// A Job-like pod with the agent as a plain container: `restart_policy`, and for each
    /// workload container its exit code once terminated (None: still running).
    fn job_pod(restart_policy: Option<&str>, workload: &[(&str, Option<i32>)]) -> Pod {
        let mut containers: Vec<Container> = workload
            .iter()
            .map(|(name, _)| Container {
                name: (*name).into(),
                ..Container::default()
            })
            .collect();
        containers.push(Container {
            name: AGENT_CONTAINER_NAME.into(),
            ..Container::default()
        });
        let state = |exit_code: Option<i32>| match exit_code {
            Some(exit_code) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
            None => ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            },
        };
        let statuses = workload
            .iter()
            .map(|(name, exit_code)| ContainerStatus {
                state: Some(state(*exit_code)),
                ..status(name, Some("containerd://aaa"))
            })
            .chain([ContainerStatus {
                state: Some(state(None)),
                ..status(AGENT_CONTAINER_NAME, Some("containerd://ccc"))
            }])
            .collect();
        Pod {
            spec: Some(PodSpec {
                containers,
                restart_policy: restart_policy.map(String::from),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(statuses),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn workload_finished_only_when_no_container_will_run_again() {
        let cases = [
            // Never: whatever the exit code, a terminated container stays so.
            (
                Some("Never"),
                vec![("train", Some(0)), ("upload", Some(1))],
                true,
            ),
            (
                Some("Never"),
                vec![("train", Some(0)), ("upload", None)],
                false,
            ),
            // OnFailure: a failed container is restarted.
            (Some("OnFailure"), vec![("train", Some(0))], true),
            (Some("OnFailure"), vec![("train", Some(137))], false),
            // Always (also unset): everything is restarted.
            (Some("Always"), vec![("train", Some(0))], false),
            (None, vec![("train", Some(0))], false),
            // Nothing but the agent: there is no workload to wait for.
            (Some("Never"), vec![], false),
        ];
        for (policy, workload, finished) in cases {
            let pod = job_pod(policy, &workload);
            assert_eq!(workload_finished(&pod), finished, "{policy:?} {workload:?}");
            let response = merge(&[], &pod);
            assert_eq!(response.workload_finished, finished, "also when unwatched");
        }
    }

    #[test]
    fn workload_finished_waits_for_containers_without_status() {
        let mut pod = job_pod(Some("Never"), &[("train", Some(0)), ("upload", Some(0))]);
        let statuses = pod.status.as_mut().unwrap().container_statuses.as_mut();
        statuses.unwrap().retain(|status| status.name != "upload");
        assert!(!workload_finished(&pod), "upload has not started yet");
    }

    #[test]
    fn native_sidecar_is_stopped_by_the_kubelet_not_told_to_exit() {
        let mut pod = job_pod(Some("Never"), &[("train", Some(0))]);
        let spec = pod.spec.as_mut().unwrap();
        let agent = spec.containers.pop().unwrap();
        spec.init_containers = Some(vec![Container {
            restart_policy: Some("Always".into()),
            ..agent
        }]);
        assert!(!workload_finished(&pod));
    }
}
