//! The simulated pods: created through the API server (so the webhook admits each one and
//! injects the agent), bound to the simulated node, given container statuses as a kubelet
//! would, and a token requested for each as the kubelet projects it into the agent.

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use procwatch_crds::constants::{AGENT_CONTAINER_NAME, env};
use serde_json::json;

/// The containers of every simulated pod, as a typical workload with two sidecars.
pub const CONTAINERS: [&str; 3] = ["app", "proxy", "log-shipper"];
/// The label that groups pods by the watch that selects them.
pub const GROUP_LABEL: &str = "procwatch.dev/load-group";

/// What the webhook gave a pod's agent: where to report, whom to trust, the token's
/// audience and lifetime.
#[derive(Clone, Debug)]
pub struct AgentCoordinates {
    pub report_url: String,
    pub ca_pem: String,
    pub audience: String,
    pub token_seconds: i64,
}

/// A pod as it was created, with the container IDs its status was given.
#[derive(Clone, Debug)]
pub struct SimulatedPod {
    pub name: String,
    pub uid: String,
    pub group: usize,
    /// `(container name, container ID)` of the workload's containers.
    pub containers: Vec<(String, String)>,
}

/// Name of pod `index` of `group`: sorting by name puts index 0 of each group first.
pub fn pod_name(group: usize, index: usize) -> String {
    format!("load-g{group:02}-{index:05}")
}

/// The group label's value of `group`.
pub fn group_value(group: usize) -> String {
    format!("g{group:02}")
}

/// A pod of `group` bound to `node` that tolerates every taint (the node's, and the ones the
/// node lifecycle controller would add) and never runs: no kubelet serves the node.
pub fn pod_manifest(name: &str, group: usize, node: &str) -> anyhow::Result<Pod> {
    let containers: Vec<_> = CONTAINERS
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "image": "localhost/busybox:local",
                "imagePullPolicy": "Never",
                "command": ["sleep", "infinity"],
            })
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {GROUP_LABEL: group_value(group), "app.kubernetes.io/name": "procwatch-load"},
        },
        "spec": {
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": containers,
        },
    }))?)
}

/// The 64-hex-digit ID of container `container` of pod `pod` in run `run`.
fn container_id(run: u32, pod: usize, container: usize) -> String {
    format!(
        "containerd://{:064x}",
        (u128::from(run) << 64) | ((pod as u128) << 8) | container as u128
    )
}

/// Sets the pod's status as the kubelet does once its containers run: Running, Ready, every
/// container (the injected agent's too) running with an ID.
pub async fn mark_running(
    pods: &Api<Pod>,
    created: &Pod,
    run: u32,
    index: usize,
    group: usize,
) -> anyhow::Result<SimulatedPod> {
    let name = created
        .metadata
        .name
        .clone()
        .context("a pod without name")?;
    let uid = created.metadata.uid.clone().context("a pod without uid")?;
    let now = serde_json::to_value(Time(Timestamp::now()))?;
    let spec_containers: &[Container] = created
        .spec
        .as_ref()
        .map_or(&[], |spec| spec.containers.as_slice());
    let statuses: Vec<_> = spec_containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("sha256:{:064x}", i),
                "containerID": container_id(run, index, i),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    let status = json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
            "containerStatuses": statuses,
        },
    });
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .with_context(|| format!("setting the status of pod {name}"))?;
    let containers = spec_containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name != AGENT_CONTAINER_NAME)
        .map(|(i, c)| (c.name.clone(), container_id(run, index, i)))
        .collect();
    Ok(SimulatedPod {
        name,
        uid,
        group,
        containers,
    })
}

/// Where the webhook told the pod's agent to report, from the agent container's environment
/// and its token volume; an error when the pod has no agent.
pub fn agent_coordinates(pod: &Pod) -> anyhow::Result<AgentCoordinates> {
    let spec = pod.spec.as_ref().context("a pod without spec")?;
    let agent = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == AGENT_CONTAINER_NAME)
        .context("the webhook did not inject the agent")?;
    let var = |name: &str| {
        agent
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .with_context(|| format!("the agent has no {name}"))
    };
    let projection = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|s| s.service_account_token.as_ref())
        .context("the agent has no projected token")?;
    Ok(AgentCoordinates {
        report_url: var(env::REPORT_URL)?,
        ca_pem: var(env::CA_PEM)?,
        audience: projection.audience.clone().unwrap_or_default(),
        token_seconds: projection.expiration_seconds.unwrap_or(3600),
    })
}

/// A token of the pod's service account with the agent's audience, bound to the pod: what the
/// kubelet projects into the agent's volume.
pub async fn pod_token(
    accounts: &Api<ServiceAccount>,
    pod: &Pod,
    coordinates: &AgentCoordinates,
) -> anyhow::Result<String> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![coordinates.audience.clone()],
            expiration_seconds: Some(coordinates.token_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest of service account {account}"))?;
    match answer.status {
        Some(status) if !status.token.is_empty() => Ok(status.token),
        _ => bail!("TokenRequest of service account {account}: no token in the answer"),
    }
}
