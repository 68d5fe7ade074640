//! End-to-end test support for procwatch: real Kubernetes, no mocks.
//!
//! The tests run against the cluster named by `KUBECONFIG`, or, when `KUBECONFIG` is unset, the
//! single-node cluster that `tests/cluster/up` starts on this machine
//! (`$PROCWATCH_CLUSTER_DIR/admin.kubeconfig`, default `/var/tmp/procwatch-cluster`).
//!
//! ```no_run
//! use procwatch_e2e::{Cluster, Wait, wait_for};
//! use std::time::Duration;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let cluster = Cluster::connect().await?;
//! let ns = cluster.namespace("example").await?; // deleted when dropped
//! ns.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n").await?;
//! let cm = wait_for("config map x", Duration::from_secs(10), || async {
//!     Ok(Wait::Done(ns.kubectl(&["get", "configmap", "x", "-o", "name"]).await?))
//! })
//! .await?;
//! ns.finish(); // the test passed: no diagnostics dump on drop
//! # Ok(()) }
//! ```

mod apply;
mod cluster;
mod diagnostics;
pub mod load;
mod operator;
pub mod plugin;
pub mod processwatch;
pub mod samples;
mod wait;

pub use apply::apply_yaml;
pub use cluster::{
    ApiServerOutage, Cluster, KubeconfigSource, TestNamespace, cluster_dir, cluster_scripts_dir,
};
pub use diagnostics::{daemon_logs, namespace_report};
pub use operator::{
    ADMISSION_URL, CRD_NAME, LOOPBACK_OVERLAY, METRICS_URL, OPERATOR_DEPLOYMENT,
    OPERATOR_NAMESPACE, Operator, PROJECT_IMAGE, READYZ_URL, REPORT_URL, SERVING_SECRET,
    WEBHOOK_CONFIGURATION, https_client_trusting, operator_metrics, repo_root, webhook_injects,
};
pub use wait::{Wait, wait_for};
