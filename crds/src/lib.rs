//! The public API of procwatch: the `ProcessWatch` custom resource (`procwatch.dev/v1alpha1`),
//! the protocol between the agent and the operator, and the names both sides agree on.

pub mod constants;
pub mod duration;
pub mod report;
pub mod spec;
pub mod status;

pub use duration::Interval;
pub use spec::*;
pub use status::*;

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as committed under `crds/` and applied by `config/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ProcessWatch::crd())
}
