//! The Pod Security level a namespace enforces, read from a cache of namespace metadata.
//!
//! The agent with `agent.ptrace: true` runs as root with SYS_PTRACE, which only `privileged`
//! allows; Pod Security admission would refuse the whole pod elsewhere. So in such a namespace
//! the webhook injects the agent without ptrace (it meets `restricted`), and the watch says so.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// The namespace label Pod Security admission enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The reason of the Attached condition when ptrace was asked for and is not allowed.
pub const PTRACE_FORBIDDEN: &str = "PtraceForbiddenByPodSecurity";

/// Namespace metadata (labels), kept by a metadata watch: no GET per admission.
pub type Namespaces = Store<PartialObjectMeta<Namespace>>;

/// What the namespace enforces, as far as the agent is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enforced {
    /// No enforce label, or `privileged`: the ptrace agent is admitted.
    Privileged,
    /// `baseline`, `restricted`, or a value Pod Security admission reads as `restricted`.
    Level(String),
    /// The namespace is not (yet) in the cache: assume the worst, never block a pod.
    Unknown,
}

impl Enforced {
    /// Reads the enforce label. Pod Security admission treats an invalid level as
    /// `restricted`, so anything but `privileged` forbids ptrace.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        match labels.get(ENFORCE_LABEL).map(String::as_str) {
            None | Some("privileged") => Enforced::Privileged,
            Some(level) => Enforced::Level(level.to_string()),
        }
    }

    /// The level `namespace` enforces, from the cache.
    pub fn of(namespaces: &Namespaces, namespace: &str) -> Self {
        namespaces
            .get(&ObjectRef::new(namespace))
            .map_or(Enforced::Unknown, |ns| {
                Enforced::from_labels(&ns.metadata.labels.clone().unwrap_or_default())
            })
    }

    pub fn allows_ptrace(&self) -> bool {
        *self == Enforced::Privileged
    }

    /// Why ptrace is not allowed, for a condition or an event; `None` when it is.
    pub fn ptrace_refusal(&self) -> Option<String> {
        match self {
            Enforced::Privileged => None,
            Enforced::Level(level) => Some(format!(
                "the namespace enforces Pod Security level {level:?} ({ENFORCE_LABEL}), which \
                 forbids SYS_PTRACE"
            )),
            Enforced::Unknown => {
                Some("the namespace's Pod Security level is not known yet".to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(level: Option<&str>) -> BTreeMap<String, String> {
        level
            .map(|l| (ENFORCE_LABEL.to_string(), l.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn only_privileged_or_unlabelled_namespaces_allow_ptrace() {
        assert!(Enforced::from_labels(&labels(None)).allows_ptrace());
        assert!(Enforced::from_labels(&labels(Some("privileged"))).allows_ptrace());
        for level in ["baseline", "restricted", "bogus"] {
            let enforced = Enforced::from_labels(&labels(Some(level)));
            assert!(!enforced.allows_ptrace(), "{level}");
            assert!(enforced.ptrace_refusal().unwrap().contains(level));
        }
        assert!(!Enforced::Unknown.allows_ptrace());
    }

    #[test]
    fn the_level_comes_from_the_cache() {
        use kube::runtime::watcher::Event;
        let (reader, mut writer) =
            kube::runtime::reflector::store::<PartialObjectMeta<Namespace>>();
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team-a".into());
        ns.metadata.labels = Some(labels(Some("baseline")));
        writer.apply_watcher_event(&Event::Apply(ns));
        assert_eq!(
            Enforced::of(&reader, "team-a"),
            Enforced::Level("baseline".into())
        );
        assert_eq!(Enforced::of(&reader, "team-b"), Enforced::Unknown);
    }
}
