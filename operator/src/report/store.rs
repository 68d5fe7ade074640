//! The latest findings of every reporting pod: one entry per pod, replaced by each report and
//! dropped when the pod is deleted, so memory stays bounded by the pods that run an agent.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use procwatch_crds::report::PidCursor;
use procwatch_crds::{ContainerReport, SkippedProcesses};

use crate::{read, write};

/// A pod by namespace and name, as reports and the pod cache name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        PodKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The key of a pod from the cache.
    pub fn of(pod: &Pod) -> Self {
        PodKey {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
        }
    }
}

/// One pod's last report, its containers already named from the pod's statuses.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFindings {
    /// The pod the report came from; a pod recreated under the same name has another uid.
    pub uid: String,
    /// When the operator received it, by the operator's clock (agents' clocks may drift).
    pub received_at: Timestamp,
    pub containers: Vec<ContainerReport>,
    pub skipped: SkippedProcesses,
    /// The last pid allocated in the pod's PID namespace at the scan, when the agent sent it.
    pub pids: Option<PidCursor>,
}

#[derive(Clone, Default)]
pub struct FindingsStore(Arc<RwLock<HashMap<PodKey, Arc<PodFindings>>>>);

impl FindingsStore {
    pub fn insert(&self, pod: PodKey, findings: PodFindings) {
        write(&self.0).insert(pod, Arc::new(findings));
    }

    pub fn get(&self, pod: &PodKey) -> Option<Arc<PodFindings>> {
        read(&self.0).get(pod).cloned()
    }

    pub fn contains(&self, pod: &PodKey) -> bool {
        read(&self.0).contains_key(pod)
    }

    pub fn remove(&self, pod: &PodKey) {
        write(&self.0).remove(pod);
    }

    pub fn len(&self) -> usize {
        read(&self.0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_pod_replaced_and_removed() {
        let store = FindingsStore::default();
        let key = PodKey::new("shop", "web-1");
        let findings = |uid: &str| PodFindings {
            uid: uid.into(),
            received_at: Timestamp::UNIX_EPOCH,
            containers: vec![],
            skipped: Default::default(),
            pids: None,
        };
        store.insert(key.clone(), findings("a"));
        store.insert(key.clone(), findings("b"));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&key).unwrap().uid, "b");
        store.remove(&key);
        assert!(store.is_empty());
    }
}
