//! `ProcessWatch.spec`: which pods to watch, how to attach to them, what to collect and how much
//! of it to keep in the status.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
#[cfg(feature = "crd")]
use kube::CustomResource;
#[cfg(feature = "crd")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "crd")]
use crate::status::ProcessWatchStatus;
use crate::{Expectation, Interval, ProcessEvents};

/// Selects pods of its namespace, attaches the procwatch agent to them and reports, per
/// container, what runs there.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "procwatch.dev",
        version = "v1alpha1",
        kind = "ProcessWatch",
        plural = "processwatches",
        doc = "Selects pods of its namespace, attaches the procwatch agent and reports what runs in each container.",
        shortname = "pw",
        namespaced,
        status = "ProcessWatchStatus",
        printcolumn = r#"{"name":"Selected","type":"integer","jsonPath":".status.selectedPods"}"#,
        printcolumn = r#"{"name":"Attached","type":"integer","jsonPath":".status.attachedPods"}"#,
        printcolumn = r#"{"name":"Reporting","type":"integer","jsonPath":".status.reportingPods"}"#,
        printcolumn = r#"{"name":"Processes","type":"integer","jsonPath":".status.processes"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Compliant","type":"string","jsonPath":".status.conditions[?(@.type==\"Compliant\")].status"}"#,
        printcolumn = r#"{"name":"InSync","type":"string","jsonPath":".status.conditions[?(@.type==\"InSync\")].status"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "crd", schemars(transform = bound_every_list_and_string))]
pub struct ProcessWatchSpec {
    /// Pods of this namespace to watch.
    pub selector: LabelSelector,
    /// Container names to report; empty reports every container but the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "crd", schemars(length(max = 64), inner(length(max = 63))))]
    pub containers: Vec<String>,
    /// Sampling period, from 1s to 1h.
    #[serde(default)]
    #[cfg_attr(feature = "crd", schemars(default = "default_interval_text"))]
    pub interval: Interval,
    #[serde(default)]
    pub attach: Attach,
    #[serde(default)]
    pub collect: Collect,
    #[serde(default)]
    pub report: ReportLimits,
    #[serde(default)]
    pub agent: AgentSettings,
    /// What should run: rules per container, judged by the operator on every report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "crd", schemars(length(max = 16)))]
    pub expect: Vec<Expectation>,
}

/// Items of a list of the spec, unless the field says otherwise.
pub const MAX_ITEMS: u64 = 64;
/// Characters of a string of the spec: a label key with its prefix takes 317.
pub const MAX_LENGTH: u64 = 1024;
/// Entries of a map of the spec (matchLabels, resource quantities).
pub const MAX_PROPERTIES: u64 = 64;

/// Bounds what one tenant's watch can make the API server store and the operator hold:
/// every list, string and map of the spec, its selector and resources included, gets a
/// maximum where the field sets none.
#[cfg(feature = "crd")]
fn bound_every_list_and_string(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        let serde_json::Value::Object(map) = value else {
            return;
        };
        let bound = |map: &mut serde_json::Map<String, serde_json::Value>, key: &str, max| {
            map.entry(key).or_insert(serde_json::json!(max));
        };
        match map.get("type").and_then(serde_json::Value::as_str) {
            Some("array") => bound(map, "maxItems", MAX_ITEMS),
            Some("string") => bound(map, "maxLength", MAX_LENGTH),
            Some("object") if map.contains_key("additionalProperties") => {
                bound(map, "maxProperties", MAX_PROPERTIES)
            }
            _ => {}
        }
        for child in map.values_mut() {
            match child {
                serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
                other => walk(other),
            }
        }
    }
    let mut value = serde_json::Value::Object(std::mem::take(schema.ensure_object()));
    walk(&mut value);
    if let serde_json::Value::Object(map) = value {
        *schema.ensure_object() = map;
    }
}

#[cfg(feature = "crd")]
fn default_interval_text() -> String {
    Interval::DEFAULT.to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Attach {
    #[serde(default)]
    pub mode: AttachMode,
    #[serde(default)]
    pub existing_pods: ExistingPods,
}

/// How the agent joins a pod.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum AttachMode {
    /// Injected at pod creation by the admission webhook.
    #[default]
    Sidecar,
    /// Added as an ephemeral container to running pods, without a restart.
    Ephemeral,
}

/// What happens to pods that were created before the watch and so have no agent.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum ExistingPods {
    /// List them in `status.needsRestart`.
    #[default]
    Report,
    /// Evict them one at a time through the Eviction API, so PodDisruptionBudgets hold.
    Evict,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Collect {
    #[serde(default)]
    pub environment: EnvironmentPolicy,
    /// Count and kinds of open descriptors.
    #[serde(default = "yes")]
    pub open_files: bool,
    /// Listening TCP/UDP and unix sockets, with a path reachable from the pod.
    #[serde(default = "yes")]
    pub sockets: bool,
    /// Distinct file-backed executable mappings.
    #[serde(default)]
    pub libraries: bool,
    /// Absolute paths to fingerprint inside each container: size, mode, sha256, never content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 32), inner(regex(pattern = "^/"), length(max = 4096)))
    )]
    pub files: Vec<String>,
    /// Files larger than this many bytes are reported by size and mode only, without sha256.
    #[serde(default = "default_max_file_bytes")]
    #[cfg_attr(feature = "crd", schemars(range(min = 1, max = 1073741824)))]
    pub max_file_bytes: u64,
}

fn yes() -> bool {
    true
}

/// 64 MiB: hashing a file costs the agent a read of all of it, every interval.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

pub(crate) fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

impl Default for Collect {
    fn default() -> Self {
        Collect {
            environment: EnvironmentPolicy::default(),
            open_files: true,
            sockets: true,
            libraries: false,
            files: Vec::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// How much of each process's environment is reported.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum EnvironmentPolicy {
    /// Nothing.
    None,
    /// Variable names only.
    #[default]
    Names,
    /// Names and values, with the values of secret-looking names masked.
    Redacted,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReportLimits {
    /// Processes listed per container, busiest first.
    #[serde(default = "default_max_processes")]
    #[cfg_attr(feature = "crd", schemars(range(min = 1, max = 200)))]
    pub max_processes: u32,
    /// Pods listed with full detail; the summary always covers every pod.
    #[serde(default = "default_max_pods")]
    #[cfg_attr(feature = "crd", schemars(range(min = 1, max = 100)))]
    pub max_pods: u32,
    /// `New`: an Event for each process that starts in a container that had already reported.
    #[serde(default, skip_serializing_if = "ProcessEvents::is_none")]
    pub process_events: ProcessEvents,
}

fn default_max_processes() -> u32 {
    20
}

fn default_max_pods() -> u32 {
    10
}

impl Default for ReportLimits {
    fn default() -> Self {
        ReportLimits {
            max_processes: default_max_processes(),
            max_pods: default_max_pods(),
            process_events: ProcessEvents::None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentSettings {
    /// Add CAP_SYS_PTRACE, needed to read environ, fd, maps and root of processes of other users.
    #[serde(default)]
    pub ptrace: bool,
    /// Resources of the agent container; small requests and limits when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}
