//! Server-side apply of YAML manifests, any kind.

use anyhow::Context;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};

/// The field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "procwatch-e2e";

/// Applies every document of `yaml` (separated by `---`) with server-side apply, forcing
/// ownership. Namespaced objects without `metadata.namespace` go to `namespace`.
/// Returns the objects as the server stored them, in document order.
pub async fn apply_yaml(
    client: &Client,
    namespace: &str,
    yaml: &str,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).with_context(|| format!("YAML document {i}"))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let obj: DynamicObject = serde_json::from_value(value)
            .with_context(|| format!("YAML document {i} is not a Kubernetes object"))?;
        let types = obj
            .types
            .clone()
            .with_context(|| format!("YAML document {i} has no apiVersion/kind"))?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| {
                format!(
                    "the server does not serve {}/{}",
                    types.api_version, types.kind
                )
            })?;
        let name = obj.name_any();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = obj.namespace().unwrap_or_else(|| namespace.to_owned());
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let stored = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
        applied.push(stored);
    }
    Ok(applied)
}
