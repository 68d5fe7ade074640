//! The protocol between the agent and the operator's report endpoint.
//!
//! The agent POSTs an [`AgentReport`] to [`crate::constants::REPORT_PATH`] with its projected
//! service-account token as bearer; the operator answers with a [`ReportResponse`] that carries
//! everything the agent needs for its next scan, so the agent never talks to the API server.
//!
//! These types are the protocol's own, not the `ProcessWatch` status: agents live as long as
//! their pods and so outlive operator upgrades, and a status change must not silently change
//! what an agent may send. The operator converts a report into status types. Unknown fields
//! are ignored on both sides, so a newer peer may add fields without a new version.
//!
//! Versions: [`VERSION`] is what this agent sends; the operator accepts [`ACCEPTED_VERSIONS`],
//! the current version and the one before, and refuses any other with a 400 whose body is an
//! [`UnsupportedVersion`]. A report without `version` is version 1, the shape agents sent before
//! the field existed.

use std::ops::RangeInclusive;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::EnvironmentPolicy;

/// The largest report body the operator accepts unless configured otherwise; the agent shrinks
/// its reports to fit, and further when the operator answers 413.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 2 * 1024 * 1024;

/// The report version this agent sends.
pub const VERSION: u32 = 1;
/// The versions the operator accepts: the current one and the one before (1 is the first).
pub const ACCEPTED_VERSIONS: RangeInclusive<u32> = 1..=VERSION;

/// Reports that predate the `version` field are version 1.
fn unversioned() -> u32 {
    1
}

/// Only the version of a report, read before the rest: a report of another version may not
/// parse as an [`AgentReport`].
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct ReportVersion {
    #[serde(default = "unversioned")]
    pub version: u32,
}

/// One scan of one pod, as the agent saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    #[serde(default = "unversioned")]
    pub version: u32,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub scanned_at: Option<Time>,
    /// One entry per container (named when the agent knew the pod's container statuses, else
    /// only `containerID` is certain; the operator names them again from the pod it watches).
    pub containers: Vec<Container>,
    /// Processes that exited while being read.
    #[serde(default)]
    pub vanished_processes: u32,
    #[serde(default)]
    pub agent_version: String,
    /// Processes in no container's count, by why (absent from older agents: none known).
    #[serde(default, skip_serializing_if = "SkippedProcesses::is_empty")]
    pub skipped: SkippedProcesses,
    /// Where the pod's PID namespace stood at the scan (absent from older agents, and when
    /// `/proc/loadavg` could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidCursor>,
}

/// The last pid allocated in the pod's PID namespace: the operator counts the pids allocated
/// between two reports from it, including those of processes no scan saw.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PidCursor {
    /// The fifth field of `/proc/loadavg`, read inside the pod.
    pub last_pid: u32,
    /// `/proc/sys/kernel/pid_max`: allocation wraps around after it (absent when unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_max: Option<u32>,
}

/// Processes a scan counted in no container, by why.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedProcesses {
    /// Exited while being read (as `vanishedProcesses`).
    #[serde(default)]
    pub gone: u32,
    /// Their `stat` could not be read or parsed.
    #[serde(default)]
    pub unreadable: u32,
    /// Not read at all: the scan reached its deadline first.
    #[serde(default)]
    pub out_of_time: u32,
}

impl SkippedProcesses {
    pub fn is_empty(&self) -> bool {
        *self == SkippedProcesses::default()
    }
}

impl Default for AgentReport {
    fn default() -> Self {
        AgentReport {
            version: VERSION,
            pod_name: String::new(),
            pod_namespace: String::new(),
            pod_uid: String::new(),
            scanned_at: None,
            containers: Vec::new(),
            vanished_processes: 0,
            agent_version: String::new(),
            skipped: SkippedProcesses::default(),
            pids: None,
        }
    }
}

/// What runs in one container of the pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name, or the runtime and short ID (`containerd-3f2a…`) while the agent does
    /// not know the name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    /// Every process of the container, listed or not.
    pub process_count: u32,
    /// Total CPU use since the previous scan over every process of the container.
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Total resident set size over every process of the container.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The busiest processes (CPU, then memory), at most `collect.maxProcesses`.
    #[serde(default)]
    pub processes: Vec<Process>,
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
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub command: String,
    #[serde(default)]
    pub args: String,
    pub state: ProcessState,
    pub threads: u32,
    #[serde(default)]
    pub cpu_millicores: u64,
    pub cpu_time_millis: u64,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u32>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub open_file_kinds: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompMode>,
    #[serde(default)]
    pub no_new_privs: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A state a newer agent knows and this side does not reads as [`ProcessState::Other`].
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    Disabled,
    Strict,
    Filter,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListeningSocket {
    pub protocol: SocketProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    Unix,
}

/// A file's fingerprint: never its content.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileFingerprint {
    pub path: String,
    pub size: u64,
    /// Permission bits in octal, like `0644`.
    pub mode: String,
    pub sha256: String,
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

/// The union of what every watch selecting the pod asks for. The webhook also gives it to the
/// agent at start (as JSON in [`crate::constants::env::COLLECT`]), so that the first report is
/// already complete.
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
    /// Files larger than this are reported by size and mode only (absent from an older
    /// operator's answer: the default).
    #[serde(default = "crate::spec::default_max_file_bytes")]
    pub max_file_bytes: u64,
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
            max_file_bytes: collect.max_file_bytes,
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

/// The body of the operator's 400 answer to a report whose version it does not accept.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnsupportedVersion {
    pub message: String,
    /// The version of the refused report.
    pub version: u32,
    /// Every version the operator accepts, oldest first.
    pub accepted: Vec<u32>,
}

impl UnsupportedVersion {
    /// The refusal of a report of `version`, or None when that version is accepted.
    pub fn check(version: u32) -> Option<Self> {
        (!ACCEPTED_VERSIONS.contains(&version)).then(|| UnsupportedVersion {
            message: format!(
                "report version {version} is not supported; this operator accepts versions {} to {}",
                ACCEPTED_VERSIONS.start(),
                ACCEPTED_VERSIONS.end()
            ),
            version,
            accepted: ACCEPTED_VERSIONS.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_version_is_version_1() {
        let report: AgentReport = serde_json::from_str(
            r#"{"podName": "p", "podNamespace": "n", "podUid": "u", "scannedAt": null, "containers": []}"#,
        )
        .unwrap();
        assert_eq!(report.version, 1);
        // And what this agent sends says which version it is.
        let sent = serde_json::to_value(AgentReport::default()).unwrap();
        assert_eq!(sent["version"], VERSION);
    }

    #[test]
    fn only_the_current_version_and_the_one_before_are_accepted() {
        for version in ACCEPTED_VERSIONS {
            assert_eq!(UnsupportedVersion::check(version), None);
        }
        assert!(ACCEPTED_VERSIONS.contains(&VERSION));
        assert_eq!(*ACCEPTED_VERSIONS.start(), VERSION.saturating_sub(1).max(1));
        for version in [0, VERSION + 1] {
            let refusal = UnsupportedVersion::check(version).unwrap();
            assert_eq!(refusal.version, version);
            assert!(
                refusal
                    .message
                    .contains(&format!("version {version} is not supported"))
            );
            assert_eq!(refusal.accepted, ACCEPTED_VERSIONS.collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_process_state_this_side_does_not_know_is_other() {
        let state: ProcessState = serde_json::from_str(r#""Parked""#).unwrap();
        assert_eq!(state, ProcessState::Other);
    }
}
