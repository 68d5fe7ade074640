//! The names of the cached pods by namespace, so a reconcile looks at the pods of its own
//! namespace only, instead of copying and filtering every pod of the cluster. Kept by
//! [`super::triggers::PodEvents`] from the same events as the pod cache.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::report::store::PodKey;
use crate::{read, write};

#[derive(Clone, Default)]
pub struct PodNames(Arc<RwLock<HashMap<String, BTreeSet<String>>>>);

impl PodNames {
    pub fn insert(&self, pod: &PodKey) {
        write(&self.0)
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.name.clone());
    }

    pub fn remove(&self, pod: &PodKey) {
        let mut all = write(&self.0);
        if let Some(names) = all.get_mut(&pod.namespace) {
            names.remove(&pod.name);
            if names.is_empty() {
                all.remove(&pod.namespace);
            }
        }
    }

    /// Keeps only these pods: after a relist, deletions are not events.
    pub fn retain(&self, pods: &HashSet<PodKey>) {
        let mut all = write(&self.0);
        for (namespace, names) in all.iter_mut() {
            names.retain(|name| pods.contains(&PodKey::new(namespace, name)));
        }
        all.retain(|_, names| !names.is_empty());
    }

    /// The pods of `namespace` in the cache, by name.
    pub fn pods(&self, namespace: &str, cache: &Store<Pod>) -> Vec<Arc<Pod>> {
        let names: Vec<String> = read(&self.0)
            .get(namespace)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|name| cache.get(&ObjectRef::new(name).within(namespace)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;
    use crate::fixtures::pod;

    fn in_namespace(name: &str, namespace: &str) -> Pod {
        let mut pod = pod(name, "web", true);
        pod.metadata.namespace = Some(namespace.into());
        pod
    }

    #[test]
    fn pods_of_one_namespace_only() {
        let (cache, mut writer) = reflector::store::<Pod>();
        let index = PodNames::default();
        for pod in [
            in_namespace("a", "shop"),
            in_namespace("b", "shop"),
            in_namespace("a", "bank"),
        ] {
            index.insert(&PodKey::of(&pod));
            writer.apply_watcher_event(&watcher::Event::Apply(pod));
        }
        let names = |namespace: &str| -> Vec<(String, String)> {
            index
                .pods(namespace, &cache)
                .iter()
                .map(|pod| {
                    let key = PodKey::of(pod);
                    (key.namespace, key.name)
                })
                .collect()
        };
        assert_eq!(
            names("shop"),
            [("shop".into(), "a".into()), ("shop".into(), "b".into())]
        );
        assert_eq!(names("bank"), [("bank".into(), "a".into())]);
        assert!(names("none").is_empty());

        index.remove(&PodKey::new("shop", "a"));
        assert_eq!(names("shop"), [("shop".into(), "b".into())]);
        index.retain(&HashSet::from([PodKey::new("bank", "a")]));
        assert!(names("shop").is_empty());
        assert_eq!(names("bank").len(), 1);
    }
}
