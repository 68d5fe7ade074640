//! The public API of procwatch: the `ProcessWatch` custom resource (`procwatch.dev/v1alpha1`),
//! the protocol between the agent and the operator, and the names both sides agree on.
//!
//! The default feature `crd` adds what only the API server needs: the `ProcessWatch` type
//! (kube's `CustomResource` derive), the JSON schemas and [`crd_yaml`]. The agent turns it off
//! and gets plain serde types, without kube or schemars.

pub mod constants;
pub mod duration;
pub mod expect;
pub mod report;
pub mod spec;
pub mod status;

pub use duration::Interval;
pub use expect::*;
pub use spec::*;
pub use status::*;

#[cfg(feature = "crd")]
use kube::CustomResourceExt;

/// The CRD as YAML, exactly as committed in `config/crd/processwatches.yaml`.
#[cfg(feature = "crd")]
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ProcessWatch::crd())
}
