//! `spec.expect`: what should run in a watch's containers. The agent only reports facts; the
//! operator holds these rules and judges every report against them.
//!
//! Every field of a rule is optional: an absent field is no rule, an empty list is a rule that
//! nothing satisfies (`listening: []` means no listener at all).

#[cfg(feature = "crd")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SeccompMode;

/// Rules per watch.
pub const MAX_EXPECTATIONS: usize = 16;
/// A container name, or `*` for every container the watch reports.
pub const CONTAINER_PATTERN: &str = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$";
/// `TCP 127.0.0.1:8080`, `UDP [::]:53`, `Unix /run/app.sock`; the address part may be a glob.
pub const LISTENER_PATTERN: &str = r"^(TCP|UDP|Unix) \S+$";
/// A capability name as the kernel spells it, with or without `CAP_`.
pub const CAPABILITY_PATTERN: &str = r"^(CAP_)?[A-Z][A-Z_]*$";
/// A sha256 digest: 64 lowercase hex digits, as the agent reports them.
pub const SHA256_PATTERN: &str = r"^[0-9a-f]{64}$";

/// The rules for the containers named by `container`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Expectation {
    /// The container name these rules apply to, or `*` for every reported container.
    #[cfg_attr(
        feature = "crd",
        schemars(regex(pattern = CONTAINER_PATTERN), length(max = 63))
    )]
    pub container: String,
    /// Only commands (the kernel's `comm`) matching one of these globs may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 32), inner(length(min = 1, max = 256)))
    )]
    pub commands: Option<Vec<String>>,
    /// Only these users (names, or uids as digits) may run processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 32), inner(length(min = 1, max = 256)))
    )]
    pub users: Option<Vec<String>>,
    /// Every process runs as a uid other than 0, except those whose command line matches one
    /// of these globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 32), inner(length(min = 1, max = 256)))
    )]
    pub non_root_except: Option<Vec<String>>,
    /// At most this many processes in each container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(range(min = 0, max = 100000)))]
    pub max_processes: Option<u32>,
    /// Exactly these listeners (`TCP 127.0.0.1:8080`, `UDP *:53`, `Unix /run/app.sock`; the
    /// address may be a glob), no other. Needs `collect.sockets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 32), inner(regex(pattern = LISTENER_PATTERN), length(max = 256)))
    )]
    pub listening: Option<Vec<String>>,
    /// No process has any of these effective capabilities (`SYS_ADMIN` or `CAP_SYS_ADMIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "crd",
        schemars(length(max = 41), inner(regex(pattern = CAPABILITY_PATTERN), length(max = 32)))
    )]
    pub forbid_capabilities: Option<Vec<String>>,
    /// When true, every process has `no_new_privs` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privs: Option<bool>,
    /// The seccomp modes processes may run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(length(max = 3)))]
    pub seccomp: Option<Vec<SeccompMode>>,
    /// Expected fingerprints of files listed in `collect.files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(length(max = 32)))]
    pub files: Option<Vec<ExpectedFile>>,
}

/// A file's expected content, by digest.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExpectedFile {
    /// One of `collect.files`.
    #[cfg_attr(feature = "crd", schemars(regex(pattern = "^/"), length(max = 4096)))]
    pub path: String,
    /// 64 lowercase hex digits.
    #[cfg_attr(feature = "crd", schemars(regex(pattern = SHA256_PATTERN)))]
    pub sha256: String,
}

/// Which process changes become Events.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum ProcessEvents {
    /// None.
    #[default]
    None,
    /// `ProcessStarted` for each process that appears in a container that had already
    /// reported, at most a few per pod and minute.
    New,
}

impl ProcessEvents {
    pub fn is_none(&self) -> bool {
        *self == ProcessEvents::None
    }
}
