//! Names shared by the operator, its webhook and the agent.

/// Name of the injected agent container.
pub const AGENT_CONTAINER_NAME: &str = "procwatch-agent";
/// Audience of the projected service-account token the agent authenticates with. The API
/// server refuses such a token, so it grants nothing there.
pub const TOKEN_AUDIENCE: &str = "procwatch";
/// Where the projected token is mounted, in the agent container only.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/procwatch";
pub const TOKEN_FILE: &str = "/var/run/secrets/procwatch/token";
/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "procwatch-operator";
/// Path of the report endpoint on the operator.
pub const REPORT_PATH: &str = "/report/v1";

/// Pod annotation set by the webhook: the watches that selected the pod at creation,
/// comma-separated.
pub const WATCHES_ANNOTATION: &str = "procwatch.dev/watches";
/// Pod label that opts a pod out of injection when set to `"false"`.
pub const INJECT_LABEL: &str = "procwatch.dev/inject";

/// Environment of the agent container, set by the webhook.
pub mod env {
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const POD_UID: &str = "POD_UID";
    pub const REPORT_URL: &str = "PROCWATCH_REPORT_URL";
    /// PEM of the CA that signed the operator's serving certificate (public, not a secret).
    pub const CA_PEM: &str = "PROCWATCH_CA_PEM";
    pub const TOKEN_FILE: &str = "PROCWATCH_TOKEN_FILE";
    pub const INTERVAL: &str = "PROCWATCH_INTERVAL";
    /// What to collect until the operator's first answer, as the JSON of a
    /// [`crate::report::CollectRequest`].
    pub const COLLECT: &str = "PROCWATCH_COLLECT";
}
