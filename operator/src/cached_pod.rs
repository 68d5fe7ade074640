//! What of a pod the operator keeps in its cache: the fields it reads, nothing else. Every
//! replica caches every pod of the cluster, and a tenant decides how large its pods are
//! (annotations, environment, volumes, managed fields), so the rest is dropped before a pod
//! enters the store.
//!
//! The operator reads: name, namespace, uid, labels, creation and deletion time and controller
//! owner (selection, eviction); the containers' names, `shareProcessNamespace`, `hostPID`, the
//! OS (`spec.os`, the nodeSelector's `kubernetes.io/os`), `nodeName` and `restartPolicy`
//! (attachment, opt-out, Job completion); the phase, the Ready condition and each container's
//! name, ID and state (report attribution, eviction pacing, Job completion). A new reader of
//! a pod field adds it here; the test below pins the answers of every reader.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, EphemeralContainer, Pod, PodCondition, PodSpec,
    PodStatus,
};
use kube::api::ObjectMeta;

const OS_LABEL: &str = "kubernetes.io/os";

/// Replaces `pod` by its [`trimmed`] form, for `WatchStreamExt::modify`.
pub fn trim(pod: &mut Pod) {
    *pod = trimmed(std::mem::take(pod));
}

/// The pod with only the fields the operator reads.
pub fn trimmed(pod: Pod) -> Pod {
    let metadata = pod.metadata;
    Pod {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            labels: metadata.labels,
            creation_timestamp: metadata.creation_timestamp,
            deletion_timestamp: metadata.deletion_timestamp,
            owner_references: metadata
                .owner_references
                .map(|owners| {
                    owners
                        .into_iter()
                        .filter(|owner| owner.controller == Some(true))
                        .collect::<Vec<_>>()
                })
                .filter(|owners| !owners.is_empty()),
            ..ObjectMeta::default()
        },
        spec: pod.spec.map(spec),
        status: pod.status.map(status),
    }
}

fn spec(spec: PodSpec) -> PodSpec {
    let named = |name: String| Container {
        name,
        ..Container::default()
    };
    PodSpec {
        containers: spec.containers.into_iter().map(|c| named(c.name)).collect(),
        init_containers: spec
            .init_containers
            .map(|all| all.into_iter().map(|c| named(c.name)).collect()),
        ephemeral_containers: spec.ephemeral_containers.map(|all| {
            all.into_iter()
                .map(|c| EphemeralContainer {
                    name: c.name,
                    ..EphemeralContainer::default()
                })
                .collect()
        }),
        share_process_namespace: spec.share_process_namespace,
        host_pid: spec.host_pid,
        os: spec.os,
        node_selector: spec
            .node_selector
            .and_then(|mut selector| selector.remove_entry(OS_LABEL))
            .map(|entry| BTreeMap::from([entry])),
        node_name: spec.node_name,
        restart_policy: spec.restart_policy,
        ..PodSpec::default()
    }
}

fn status(status: PodStatus) -> PodStatus {
    let statuses = |all: Option<Vec<ContainerStatus>>| {
        all.map(|all| all.into_iter().map(container_status).collect())
    };
    PodStatus {
        phase: status.phase,
        conditions: status.conditions.map(|all| {
            all.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    ..PodCondition::default()
                })
                .collect()
        }),
        container_statuses: statuses(status.container_statuses),
        init_container_statuses: statuses(status.init_container_statuses),
        ephemeral_container_statuses: statuses(status.ephemeral_container_statuses),
        ..PodStatus::default()
    }
}

fn container_status(status: ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        name: status.name,
        container_id: status.container_id,
        ready: status.ready,
        restart_count: status.restart_count,
        started: status.started,
        state: status.state.map(|state| ContainerState {
            running: state.running.map(|r| ContainerStateRunning {
                started_at: r.started_at,
            }),
            terminated: state.terminated.map(|t| ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: t.reason,
                ..ContainerStateTerminated::default()
            }),
            waiting: state.waiting.map(|w| ContainerStateWaiting {
                reason: w.reason,
                ..ContainerStateWaiting::default()
            }),
        }),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission;
    use crate::controller::status::pod_runs_agent;
    use crate::eviction;
    use crate::report::response;

    /// A pod as the API server sends it, with everything a tenant may make large.
    fn full_pod(agent: bool, phase: &str) -> Pod {
        let mut containers = vec![serde_json::json!({
            "name": "app", "image": "registry.example/app:1",
            "command": ["sh", "-c", "x".repeat(4096)],
            "env": [{"name": "SECRET", "value": "y".repeat(4096)}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"limits": {"cpu": "1"}}
        })];
        if agent {
            containers.push(serde_json::json!({"name": "procwatch-agent", "image": "agent"}));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "42", "generateName": "web-",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "web"},
                "annotations": {"big": "z".repeat(65536)},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "cm"}
                ],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "containers": containers,
                "initContainers": [{"name": "init", "image": "init", "restartPolicy": "Always"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "shareProcessNamespace": true,
                "nodeSelector": {"kubernetes.io/os": "linux", "disk": "ssd"},
                "nodeName": "node-1",
                "restartPolicy": "OnFailure",
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {
                "phase": phase,
                "podIP": "10.0.0.9",
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "m".repeat(1024)},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{
                    "name": "app", "containerID": "containerd://abc", "image": "app", "imageID": "sha",
                    "ready": true, "restartCount": 2, "started": true,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": "w".repeat(1024)}},
                    "lastState": {"terminated": {"exitCode": 1}}
                }]
            }
        }))
        .unwrap()
    }

    /// Every question the operator asks of a cached pod gets the same answer from the
    /// trimmed pod, and what no one reads is gone.
    #[test]
    fn trimming_keeps_every_answer_and_drops_the_rest() {
        for (agent, phase) in [(true, "Running"), (false, "Succeeded"), (true, "Failed")] {
            let full = full_pod(agent, phase);
            let mut cached = full.clone();
            trim(&mut cached);
            let answers = |pod: &Pod| {
                (
                    pod_runs_agent(pod),
                    admission::declined(pod),
                    pod.spec.as_ref().and_then(admission::unsupported),
                    response::workload_finished(pod),
                    response::pod_containers(pod),
                    (
                        eviction::owned_by_controller(pod),
                        eviction::is_ready(pod),
                        pod.metadata.creation_timestamp.clone(),
                    ),
                    (
                        pod.metadata.name.clone(),
                        pod.metadata.namespace.clone(),
                        pod.metadata.uid.clone(),
                        pod.metadata.labels.clone(),
                        pod.metadata.deletion_timestamp.clone(),
                        pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                        pod.status.as_ref().and_then(|s| s.phase.clone()),
                    ),
                )
            };
            assert_eq!(answers(&cached), answers(&full), "agent {agent}, {phase}");

            let kept = serde_json::to_string(&cached).unwrap();
            for dropped in [
                "managedFields",
                "annotations",
                "resourceVersion",
                "env",
                "volumes",
                "registry.example",
                "\"sha\"",
                "tolerations",
                "podIP",
                "PodScheduled",
                "lastState",
                "message",
                "disk",
                "ConfigMap",
            ] {
                assert!(!kept.contains(dropped), "{dropped} kept: {kept}");
            }
            let full_size = serde_json::to_string(&full).unwrap().len();
            assert!(
                kept.len() * 50 < full_size,
                "{} of {full_size} bytes kept",
                kept.len()
            );
        }
    }
}
