//! The protocol between the agent and the operator's report endpoint.
//!
//! The agent POSTs an [`AgentReport`] to [`crate::constants::REPORT_PATH`] with its projected
//! service-account token as bearer; the operator answers with a [`ReportResponse`] that carries
//! everything the agent needs for its next scan, so the agent never talks to the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::{ContainerReport, EnvironmentPolicy};

/// One scan of one pod, as the agent saw it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub scanned_at: Option<Time>,
    /// One entry per container (named when the agent knew the pod's container statuses, else
    /// only `containerID` is certain; the operator names them again from the pod it watches).
    pub containers: Vec<ContainerReport>,
    /// Processes that exited while being read.
    #[serde(default)]
    pub vanished_processes: u32,
    #[serde(default)]
    pub agent_version: String,
}

/// The operator's answer: what the agent should collect next, and for which containers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportResponse {
    /// When false, no watch selects this pod any more: the agent stops reporting.
    pub watched: bool,
    pub interval_seconds: u64,
    pub collect: CollectRequest,
    /// The pod's `status.containerStatuses`, name to runtime ID, for naming process groups.
    #[serde(default)]
    pub containers: Vec<ContainerIdentity>,
    /// Every other container of the pod has finished for good (a Job's pod where the agent is a
    /// plain container, not a native sidecar): the agent exits 0 so that the pod can complete.
    #[serde(default)]
    pub workload_finished: bool,
}

/// The union of what every watch selecting the pod asks for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectRequest {
    pub environment: EnvironmentPolicy,
    pub open_files: bool,
    pub sockets: bool,
    pub libraries: bool,
    #[serde(default)]
    pub files: Vec<String>,
    /// Processes to list per container, busiest first.
    pub max_processes: u32,
}

impl Default for CollectRequest {
    fn default() -> Self {
        let collect = crate::Collect::default();
        CollectRequest {
            environment: collect.environment,
            open_files: collect.open_files,
            sockets: collect.sockets,
            libraries: collect.libraries,
            files: collect.files,
            max_processes: crate::ReportLimits::default().max_processes,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerIdentity {
    pub name: String,
    /// As in `status.containerStatuses[].containerID`: `containerd://<64 hex>`.
    #[serde(rename = "containerID")]
    pub container_id: String,
}
