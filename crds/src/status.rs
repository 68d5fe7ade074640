//! `ProcessWatch.status`: written only by the operator (server-side apply), within a byte budget.
//! The per-container types are also what the agent reports (see [`crate::report`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
#[cfg(feature = "crd")]
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

// kube-apiserver 1.20 refuses a CRD whose schema has `default: ""` or `null` in an `enum`
// (found on the test cluster); the fields below need neither in the schema.

#[cfg(feature = "crd")]
fn without_default(schema: &mut Schema) {
    schema.remove("default");
}

/// `nullable: true` already admits null.
#[cfg(feature = "crd")]
fn without_null_in_enum(schema: &mut Schema) {
    if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProcessWatchStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Attached` and `Reporting`.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])))]
    pub conditions: Vec<Condition>,
    /// Pods of the namespace that the selector matches.
    #[serde(default)]
    pub selected_pods: u32,
    /// Selected pods that run the agent.
    #[serde(default)]
    pub attached_pods: u32,
    /// Attached pods whose agent reported within the last few intervals.
    #[serde(default)]
    pub reporting_pods: u32,
    /// Processes in every reporting pod (the PROCESSES column).
    #[serde(default)]
    pub processes: u64,
    /// Selected pods created without the agent; they get it when recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
    /// One entry per container name, across every reporting pod.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["container"])))]
    pub summary: Vec<ContainerSummary>,
    /// Full detail of at most `report.maxPods` pods.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])))]
    pub pods: Vec<PodReport>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub container: String,
    pub pods: u32,
    pub processes: u64,
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    /// Distinct command names seen in this container.
    #[serde(default)]
    pub commands: Vec<String>,
    /// How many distinct fingerprints each requested file has across the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_variants: Vec<FileVariants>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileVariants {
    pub path: String,
    pub variants: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Time>,
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])))]
    pub containers: Vec<ContainerReport>,
}

/// What runs in one container of one pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    /// Container name; on a plain host the runtime and short ID (`containerd-3f2a…`) or `host`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "containerID")]
    #[cfg_attr(feature = "crd", schemars(rename = "containerID"))]
    pub container_id: Option<String>,
    /// Every process of the container, listed or not.
    pub process_count: u32,
    /// Total CPU use since the previous scan over every process of the container, listed or not.
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Total resident set size over every process of the container, listed or not.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The busiest processes (CPU, then memory), at most `report.maxProcesses`.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pid"])))]
    pub processes: Vec<ProcessInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening: Vec<ListeningSocket>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileFingerprint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<String>,
    /// Something was left out to stay within the limits.
    #[serde(default)]
    pub truncated: bool,
    /// Facts the agent could not read, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// Resolved through the process's own /etc/passwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub command: String,
    /// The command line, NULs as spaces, invalid UTF-8 replaced, bounded in length.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub args: String,
    pub state: ProcessState,
    pub threads: u32,
    /// CPU use since the previous scan.
    #[serde(default)]
    pub cpu_millicores: u64,
    pub cpu_time_millis: u64,
    /// Resident set size.
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u32>,
    /// Open descriptors by kind (file, socket, pipe, anon, device, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open_file_kinds: BTreeMap<String, u32>,
    /// Effective capabilities, without the `CAP_` prefix.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(transform = without_null_in_enum))]
    pub seccomp: Option<SeccompMode>,
    #[serde(default)]
    pub no_new_privs: bool,
    /// Names, or `NAME=value` with secret-like values masked, per `collect.environment`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum ProcessState {
    Running,
    #[default]
    Sleeping,
    DiskSleep,
    Stopped,
    Tracing,
    Zombie,
    Dead,
    Idle,
    Other,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum SeccompMode {
    Disabled,
    Strict,
    Filter,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListeningSocket {
    pub protocol: SocketProtocol,
    /// `ip:port` of a TCP or UDP socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Path of a unix socket inside its container (`@name` for an abstract one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where another container of the pod reaches this unix socket: `/proc/<pid>/root/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum SocketProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    Unix,
}

/// A file's fingerprint: never its content.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileFingerprint {
    pub path: String,
    pub size: u64,
    /// Permission bits in octal, like `0644`.
    pub mode: String,
    pub sha256: String,
}
