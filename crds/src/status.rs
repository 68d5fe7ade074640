//! `ProcessWatch.status`: written only by the operator (server-side apply), within a byte budget.
//! The operator fills it from the agents' reports, which have their own types ([`crate::report`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
#[cfg(feature = "crd")]
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

// kube-apiserver 1.20 refuses a CRD whose schema has `default: ""` or `null` in an `enum`
// (found on the test cluster); the fields below need neither in the schema.
//
// It also turns an empty string of a server-side apply body into null, which a `type: string`
// field refuses, and one such value makes it refuse the whole status. So no string of the
// status is ever written empty: an empty one is left out (and reads back as empty), and empty
// items are left out of string lists. Numbers that a report may lack default to 0.

#[cfg(feature = "crd")]
fn without_default(schema: &mut Schema) {
    schema.remove("default");
}

/// For `skip_serializing_if` on an optional string: absent and empty are both left out.
fn is_none_or_empty(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(str::is_empty)
}

/// For `serialize_with` on a count or size: the API server reads integers as int64, and the
/// figures come from agents.
fn as_int64<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64((*value).min(i64::MAX.unsigned_abs()))
}

/// [`as_int64`] for an optional figure, left out when absent.
fn option_as_int64<S: serde::Serializer>(
    value: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => as_int64(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// For `skip_serializing_if` on a list of strings written with [`without_empty_items`]: a list
/// of nothing but empty strings is left out whole, as an empty list.
fn all_empty(items: &[String]) -> bool {
    items.iter().all(String::is_empty)
}

/// For `serialize_with` on a list of strings: its empty items are left out.
fn without_empty_items<S: serde::Serializer>(
    items: &[String],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().filter(|item| !item.is_empty()))
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
    #[serde(default, serialize_with = "as_int64")]
    pub processes: u64,
    /// Selected pods created without the agent; they get it when recreated.
    #[serde(
        default,
        skip_serializing_if = "all_empty",
        serialize_with = "without_empty_items"
    )]
    pub needs_restart: Vec<String>,
    /// Selected pods whose owner declined the agent: labelled `procwatch.dev/inject: "false"`
    /// or with `shareProcessNamespace: false`. A restart does not change them.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "without_empty_items"
    )]
    pub opted_out: Vec<String>,
    /// One entry per container name, across every reporting pod.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["container"])))]
    pub summary: Vec<ContainerSummary>,
    /// What breaks `spec.expect`, at most [`MAX_VIOLATIONS`] (the Compliant condition counts
    /// them all); each stays until a report no longer shows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
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
    #[serde(default)]
    pub pods: u32,
    #[serde(default, serialize_with = "as_int64")]
    pub processes: u64,
    #[serde(default, serialize_with = "as_int64")]
    pub cpu_millicores: u64,
    #[serde(default, serialize_with = "as_int64")]
    pub memory_bytes: u64,
    /// Distinct command names seen in this container.
    #[serde(default, serialize_with = "without_empty_items")]
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
    #[serde(default)]
    pub variants: u32,
    /// Each distinct fingerprint: the declared one (`spec.expect[].files`) first when there is
    /// one, else the majority, at most [`MAX_FINGERPRINTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<FileVariant>,
}

/// Fingerprints listed per file of a container summary.
pub const MAX_FINGERPRINTS: usize = 5;
/// Pod names listed per fingerprint.
pub const MAX_VARIANT_PODS: usize = 5;
/// Violations listed in the status.
pub const MAX_VIOLATIONS: usize = 20;

/// One content of a file across the pods of a container name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileVariant {
    /// Absent when the file was too large to hash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub sha256: String,
    /// Pods whose file has this content.
    #[serde(default)]
    pub pods: u32,
    /// The first few of them, by name.
    #[serde(
        default,
        skip_serializing_if = "all_empty",
        serialize_with = "without_empty_items"
    )]
    pub pod_names: Vec<String>,
    /// This is the content `spec.expect` declares.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expected: bool,
}

/// One process or container that breaks a rule of `spec.expect`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub pod: String,
    pub container: String,
    /// Absent for a rule about the container as a whole (`maxProcesses`, `listening`, `files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub command: Option<String>,
    /// The rule's field name: `commands`, `users`, `nonRootExcept`, `maxProcesses`, …
    pub rule: String,
    pub message: String,
    /// When the operator received the first report that showed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub node_name: Option<String>,
    /// When the agent reported what is shown, to within two intervals or five minutes,
    /// whichever is longer: the time alone does not rewrite the status. Whether the agent still
    /// reports is the Reporting condition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Time>,
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])))]
    pub containers: Vec<ContainerReport>,
    /// Processes of the pod that its agent counted in no container, by why; absent when none.
    #[serde(default, skip_serializing_if = "SkippedProcesses::is_empty")]
    pub skipped: SkippedProcesses,
    /// Pids allocated in the pod's PID namespace since the operator first heard from its
    /// agent, threads included, whether or not a scan saw those processes. Updated with
    /// `reportedAt`, or at once when the rate per minute doubles or halves by 120 or more.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "option_as_int64"
    )]
    pub pids_allocated: Option<u64>,
    /// Pids allocated per minute between the last two reports.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "option_as_int64"
    )]
    pub pids_per_minute: Option<u64>,
}

/// Processes an agent counted in no container, by why.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SkippedProcesses {
    /// Exited while being read.
    #[serde(default)]
    pub gone: u32,
    /// The agent could not read or parse their `stat`.
    #[serde(default)]
    pub unreadable: u32,
    /// Not read: the agent's scan reached its deadline first.
    #[serde(default)]
    pub out_of_time: u32,
}

impl SkippedProcesses {
    pub fn is_empty(&self) -> bool {
        *self == SkippedProcesses::default()
    }
}

/// What runs in one container of one pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    /// Container name; on a plain host the runtime and short ID (`containerd-3f2a…`) or `host`.
    pub name: String,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    #[serde(rename = "containerID")]
    #[cfg_attr(feature = "crd", schemars(rename = "containerID"))]
    pub container_id: Option<String>,
    /// Every process of the container, listed or not.
    #[serde(default)]
    pub process_count: u32,
    /// Total CPU use since the previous scan over every process of the container, listed or not.
    #[serde(default, serialize_with = "as_int64")]
    pub cpu_millicores: u64,
    /// Total resident set size over every process of the container, listed or not.
    #[serde(default, serialize_with = "as_int64")]
    pub memory_bytes: u64,
    /// The busiest processes (CPU, then memory), at most `report.maxProcesses`.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pid"])))]
    pub processes: Vec<ProcessInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening: Vec<ListeningSocket>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileFingerprint>,
    #[serde(
        default,
        skip_serializing_if = "all_empty",
        serialize_with = "without_empty_items"
    )]
    pub libraries: Vec<String>,
    /// Something was left out to stay within the limits.
    #[serde(default)]
    pub truncated: bool,
    /// Facts the agent could not read, each with the reason.
    #[serde(
        default,
        skip_serializing_if = "all_empty",
        serialize_with = "without_empty_items"
    )]
    pub unreadable: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i32,
    #[serde(default)]
    pub ppid: i32,
    #[serde(default)]
    pub uid: u32,
    /// Resolved through the process's own /etc/passwd.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub user: Option<String>,
    /// The kernel's name of the process (`comm`); a process may set it empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub command: String,
    /// The command line, NULs as spaces, invalid UTF-8 replaced, bounded in length; absent for
    /// a zombie or a kernel thread, which have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub args: String,
    pub state: ProcessState,
    #[serde(default)]
    pub threads: u32,
    /// CPU use since the previous scan.
    #[serde(default, serialize_with = "as_int64")]
    pub cpu_millicores: u64,
    #[serde(default, serialize_with = "as_int64")]
    pub cpu_time_millis: u64,
    /// Resident set size; a zombie has none.
    #[serde(default, serialize_with = "as_int64")]
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u32>,
    /// Open descriptors by kind (file, socket, pipe, anon, device, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open_file_kinds: BTreeMap<String, u32>,
    /// Effective capabilities, without the `CAP_` prefix.
    #[serde(default, serialize_with = "without_empty_items")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(transform = without_null_in_enum))]
    pub seccomp: Option<SeccompMode>,
    #[serde(default)]
    pub no_new_privs: bool,
    /// Names, or `NAME=value` with secret-like values masked, per `collect.environment`.
    #[serde(
        default,
        skip_serializing_if = "all_empty",
        serialize_with = "without_empty_items"
    )]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
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

impl ProcessState {
    /// The STAT letter `ps` prints.
    pub fn letter(self) -> char {
        match self {
            ProcessState::Running => 'R',
            ProcessState::Sleeping => 'S',
            ProcessState::DiskSleep => 'D',
            ProcessState::Stopped => 'T',
            ProcessState::Tracing => 't',
            ProcessState::Zombie => 'Z',
            ProcessState::Dead => 'X',
            ProcessState::Idle => 'I',
            ProcessState::Other => '?',
        }
    }
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
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub address: Option<String>,
    /// Path of a unix socket inside its container (`@name` for an abstract one).
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub path: Option<String>,
    /// Where another container of the pod reaches this unix socket: `/proc/<pid>/root/<path>`.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
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
    #[serde(default, serialize_with = "as_int64")]
    pub size: u64,
    /// Permission bits in octal, like `0644`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub mode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "crd", schemars(transform = without_default))]
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn serialized<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }

    /// A zombie as the agent reports it: no command line, no memory, state Z.
    fn zombie() -> ProcessInfo {
        ProcessInfo {
            pid: 42,
            ppid: 7,
            uid: 1000,
            command: "nc".into(),
            state: ProcessState::Zombie,
            ..ProcessInfo::default()
        }
    }

    /// Every empty string field of `value` is left out; `field` names the one under test.
    fn assert_left_out(value: &Value, field: &str) {
        assert!(
            value.get(field).is_none(),
            "an empty {field} must be left out, got {value}"
        );
    }

    #[test]
    fn a_zombie_has_no_args_but_its_ids_and_state() {
        let value = serialized(&zombie());
        assert_left_out(&value, "args");
        assert_eq!(value["state"], "Zombie");
        assert_eq!(
            (&value["pid"], &value["ppid"], &value["uid"]),
            (&json!(42), &json!(7), &json!(1000))
        );
        let back: ProcessInfo = serde_json::from_value(value).unwrap();
        assert_eq!(back, zombie());
    }

    #[test]
    fn an_empty_command_is_left_out() {
        let process = ProcessInfo {
            command: String::new(),
            ..zombie()
        };
        assert_left_out(&serialized(&process), "command");
    }

    #[test]
    fn an_empty_user_is_left_out() {
        let process = ProcessInfo {
            user: Some(String::new()),
            ..zombie()
        };
        assert_left_out(&serialized(&process), "user");
    }

    #[test]
    fn an_empty_exe_or_cwd_is_left_out() {
        let process = ProcessInfo {
            exe: Some(String::new()),
            cwd: Some(String::new()),
            ..zombie()
        };
        let value = serialized(&process);
        assert_left_out(&value, "exe");
        assert_left_out(&value, "cwd");
    }

    #[test]
    fn empty_items_of_string_lists_are_left_out() {
        let process = ProcessInfo {
            capabilities: vec![String::new(), "CHOWN".into()],
            environment: vec![String::new(), "PATH".into()],
            ..zombie()
        };
        let value = serialized(&process);
        assert_eq!(value["capabilities"], json!(["CHOWN"]));
        assert_eq!(value["environment"], json!(["PATH"]));
        let only_empty = ProcessInfo {
            environment: vec![String::new()],
            ..zombie()
        };
        assert_left_out(&serialized(&only_empty), "environment");

        let container = ContainerReport {
            name: "nginx".into(),
            libraries: vec![String::new()],
            unreadable: vec![String::new(), "environ of pid 41: gone".into()],
            ..ContainerReport::default()
        };
        let value = serialized(&container);
        assert_left_out(&value, "libraries");
        assert_eq!(value["unreadable"], json!(["environ of pid 41: gone"]));

        let summary = ContainerSummary {
            container: "nginx".into(),
            commands: vec![String::new(), "nginx".into()],
            ..ContainerSummary::default()
        };
        assert_eq!(serialized(&summary)["commands"], json!(["nginx"]));
        let status = ProcessWatchStatus {
            needs_restart: vec![String::new(), "web-1".into()],
            opted_out: vec![String::new(), "web-2".into()],
            ..ProcessWatchStatus::default()
        };
        assert_eq!(serialized(&status)["needsRestart"], json!(["web-1"]));
        assert_eq!(serialized(&status)["optedOut"], json!(["web-2"]));
    }

    #[test]
    fn an_empty_container_id_is_left_out() {
        let container = ContainerReport {
            name: "nginx".into(),
            container_id: Some(String::new()),
            ..ContainerReport::default()
        };
        assert_left_out(&serialized(&container), "containerID");
    }

    #[test]
    fn empty_pod_identities_are_left_out() {
        let pod = PodReport {
            name: "web-1".into(),
            uid: Some(String::new()),
            node_name: Some(String::new()),
            ..PodReport::default()
        };
        let value = serialized(&pod);
        assert_left_out(&value, "uid");
        assert_left_out(&value, "nodeName");
    }

    #[test]
    fn empty_socket_addresses_are_left_out() {
        let socket = ListeningSocket {
            protocol: SocketProtocol::Unix,
            address: Some(String::new()),
            path: Some(String::new()),
            reachable_at: Some(String::new()),
            pid: None,
        };
        let value = serialized(&socket);
        for field in ["address", "path", "reachableAt"] {
            assert_left_out(&value, field);
        }
    }

    #[test]
    fn an_empty_file_mode_or_digest_is_left_out() {
        let file = FileFingerprint {
            path: "/etc/x".into(),
            size: 0,
            mode: String::new(),
            sha256: String::new(),
        };
        let value = serialized(&file);
        assert_left_out(&value, "mode");
        assert_left_out(&value, "sha256");
    }

    #[test]
    fn figures_beyond_int64_are_written_as_its_maximum() {
        let process = ProcessInfo {
            memory_bytes: u64::MAX,
            cpu_time_millis: u64::MAX,
            cpu_millicores: u64::MAX,
            ..zombie()
        };
        let value = serialized(&process);
        for field in ["memoryBytes", "cpuTimeMillis", "cpuMillicores"] {
            assert_eq!(value[field], json!(i64::MAX), "{field}");
        }
    }

    /// What an older or a minimal writer sends: every number may be missing and reads as 0.
    #[test]
    fn missing_numbers_read_as_zero() {
        let process: ProcessInfo =
            serde_json::from_value(json!({"pid": 9, "state": "Zombie"})).unwrap();
        assert_eq!(
            (
                process.ppid,
                process.uid,
                process.threads,
                process.cpu_time_millis,
                process.memory_bytes
            ),
            (0, 0, 0, 0, 0)
        );
        let container: ContainerReport = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(container.process_count, 0);
        let summary: ContainerSummary = serde_json::from_value(json!({"container": "c"})).unwrap();
        assert_eq!(
            (
                summary.pods,
                summary.processes,
                summary.cpu_millicores,
                summary.memory_bytes
            ),
            (0, 0, 0, 0)
        );
        let variants: FileVariants = serde_json::from_value(json!({"path": "/x"})).unwrap();
        assert_eq!(variants.variants, 0);
        let file: FileFingerprint = serde_json::from_value(json!({"path": "/x"})).unwrap();
        assert_eq!(file.size, 0);
    }

    /// The generated schema requires only what is never empty nor missing: list-map keys and
    /// the process state.
    #[cfg(feature = "crd")]
    #[test]
    fn the_schema_requires_only_keys_and_the_state() {
        let required = |schema: Schema| -> Vec<String> {
            let value = serde_json::to_value(schema).unwrap();
            let mut names: Vec<String> = value["required"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        };
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        assert_eq!(
            required(generator.root_schema_for::<ProcessInfo>()),
            ["pid", "state"]
        );
        assert_eq!(
            required(generator.root_schema_for::<ContainerReport>()),
            ["name"]
        );
        assert_eq!(
            required(generator.root_schema_for::<ContainerSummary>()),
            ["container"]
        );
        assert_eq!(
            required(generator.root_schema_for::<FileFingerprint>()),
            ["path"]
        );
        assert_eq!(
            required(generator.root_schema_for::<FileVariants>()),
            ["path"]
        );
    }
}
