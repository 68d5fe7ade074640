//! `attach.existingPods: Evict`: pods created before their watch have no agent, and only a new
//! pod gets one (the process namespace cannot be shared later). Such pods, when a controller
//! owns them, are evicted through the Eviction API so PodDisruptionBudgets hold, one at a time:
//! the next only once every other selected pod is ready and none is terminating. Bare pods would
//! not come back, so they are only listed in `needsRestart`.
//!
//! Eviction requests carry no `apiVersion`: the API server reads them as its own Eviction
//! version, `policy/v1beta1` on 1.20 and 1.21, `policy/v1` from 1.22 on, so one request works
//! on every server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::EvictParams;

use crate::controller::status::SelectedPod;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No pod left to evict.
    Done,
    Evict {
        name: String,
        uid: String,
    },
    /// Something must settle first; says what.
    Wait(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    /// Pods without the agent that no controller owns: listed, never evicted.
    pub bare: Vec<String>,
}

pub(crate) fn owned_by_controller(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true))
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Creation timestamps have whole seconds: a pod of the same second as its watch may have been
/// created first (`kubectl apply -k` sorts Deployments and Jobs before custom resources), so it
/// counts as older. No loop: only replacements made within that same second could be evicted
/// again, and the next eviction waits [`SETTLE`].
fn created_before(pod: &Pod, watch_created: Option<&Time>) -> bool {
    match (&pod.metadata.creation_timestamp, watch_created) {
        (Some(pod), Some(watch)) => pod <= watch,
        _ => false,
    }
}

/// After an eviction, the next waits at least this long: a pod that was never scheduled is
/// deleted at once, and its controller's replacement must show up in the cache (and then
/// become ready) before the next pod goes.
pub const SETTLE: Duration = Duration::from_secs(10);

/// The pod evicted last, and how long ago.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastEviction {
    pub pod: String,
    pub uid: String,
    pub ago: Duration,
}

/// Which pod to evict next, if any.
pub fn plan(
    watch_created: Option<&Time>,
    selected: &[SelectedPod],
    last: Option<&LastEviction>,
) -> Plan {
    let old: Vec<&SelectedPod> = selected
        .iter()
        .filter(|p| p.needs_agent() && created_before(&p.pod, watch_created))
        .collect();
    let bare = old
        .iter()
        .filter(|p| !owned_by_controller(&p.pod))
        .map(|p| p.name())
        .collect();
    let mut candidates: Vec<&SelectedPod> = old
        .into_iter()
        .filter(|p| owned_by_controller(&p.pod))
        .collect();
    // The cache may not show the evicted pod terminating yet.
    let still_there = |last: &LastEviction| {
        selected
            .iter()
            .any(|p| p.pod.metadata.uid.as_deref() == Some(last.uid.as_str()) && !p.terminating)
    };
    let decision = if candidates.is_empty() {
        Decision::Done
    } else if let Some(last) = last.filter(|l| l.ago < SETTLE || still_there(l)) {
        Decision::Wait(format!(
            "evicted {}, waiting for its replacement to be ready",
            last.pod
        ))
    } else if let Some(leaving) = selected.iter().find(|p| p.terminating) {
        Decision::Wait(format!(
            "waiting for {} to terminate before the next eviction",
            leaving.name()
        ))
    } else if let Some(starting) = selected.iter().find(|p| p.attached && !is_ready(&p.pod)) {
        Decision::Wait(format!(
            "waiting for {} to be ready before the next eviction",
            starting.name()
        ))
    } else {
        // Pods that serve nothing anyway go first, then the oldest.
        candidates.sort_by_cached_key(|p| {
            (
                is_ready(&p.pod),
                p.pod.metadata.creation_timestamp.clone(),
                p.name(),
            )
        });
        let next = candidates[0];
        Decision::Evict {
            name: next.name(),
            uid: next.pod.metadata.uid.clone().unwrap_or_default(),
        }
    };
    Plan { decision, bare }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Evicted,
    /// Refused with 429: a PodDisruptionBudget allows no disruption now.
    Blocked(String),
    /// The pod is already gone.
    Gone,
}

/// Asks the API server to evict the pod.
pub async fn evict(pods: &Api<Pod>, name: &str) -> Result<Outcome, kube::Error> {
    match pods.evict(name, &EvictParams::default()).await {
        Ok(_) => Ok(Outcome::Evicted),
        Err(kube::Error::Api(status)) if status.code == 429 => Ok(Outcome::Blocked(status.message)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Outcome::Gone),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use k8s_openapi::jiff::Timestamp;
    use std::sync::Arc;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    const WATCH_CREATED: i64 = 1000;

    fn old_pod(name: &str, created: i64, owned: bool, ready: bool, attached: bool) -> SelectedPod {
        let mut pod = pod(name, "web", attached);
        pod.metadata.creation_timestamp = Some(time(created));
        if owned {
            pod.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-7c9d8".into(),
                uid: "rs".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..PodCondition::default()
        }]);
        SelectedPod {
            pod: Arc::new(pod),
            attached,
            opted_out: false,
            terminating: false,
            findings: None,
        }
    }

    fn decide(selected: &[SelectedPod], last: Option<&LastEviction>) -> Plan {
        plan(Some(&time(WATCH_CREATED)), selected, last)
    }

    #[test]
    fn the_oldest_owned_pod_goes_first_and_bare_pods_never() {
        let selected = [
            old_pod("b", 20, true, true, false),
            old_pod("a", 10, true, true, false),
            old_pod("bare", 5, false, true, false),
            old_pod("new", 2000, true, true, true),
        ];
        let plan = decide(&selected, None);
        assert_eq!(
            plan.decision,
            Decision::Evict {
                name: "a".into(),
                uid: "uid-a".into()
            }
        );
        assert_eq!(plan.bare, ["bare"]);
    }

    #[test]
    fn one_at_a_time() {
        let mut terminating = old_pod("a", 10, true, true, false);
        terminating.terminating = true;
        let selected = [terminating, old_pod("b", 20, true, true, false)];
        assert!(
            matches!(decide(&selected, None).decision, Decision::Wait(w) if w.contains("a to terminate"))
        );

        // The replacement is starting.
        let selected = [
            old_pod("b", 20, true, true, false),
            old_pod("a-new", 2000, true, false, true),
        ];
        assert!(
            matches!(decide(&selected, None).decision, Decision::Wait(w) if w.contains("a-new to be ready"))
        );

        // Just evicted, or the cache does not show the evicted pod terminating yet.
        let selected = [
            old_pod("a", 10, true, true, false),
            old_pod("b", 20, true, true, false),
        ];
        let last = |ago| LastEviction {
            pod: "a".into(),
            uid: "uid-a".into(),
            ago: Duration::from_secs(ago),
        };
        assert!(
            matches!(decide(&selected, Some(&last(60))).decision, Decision::Wait(w) if w.contains("evicted a"))
        );
        assert!(
            matches!(decide(&selected[1..], Some(&last(1))).decision, Decision::Wait(w) if w.contains("evicted a"))
        );
        assert!(matches!(
            decide(&selected[1..], Some(&last(60))).decision,
            Decision::Evict { name, .. } if name == "b"
        ));
    }

    #[test]
    fn a_pod_of_the_same_second_as_the_watch_counts_as_older() {
        let selected = [old_pod("same", WATCH_CREATED, true, true, false)];
        assert!(matches!(
            decide(&selected, None).decision,
            Decision::Evict { name, .. } if name == "same"
        ));
    }

    #[test]
    fn pods_that_are_not_ready_go_first() {
        let selected = [
            old_pod("a", 10, true, true, false),
            old_pod("b", 20, true, false, false),
        ];
        assert!(
            matches!(decide(&selected, None).decision, Decision::Evict { name, .. } if name == "b")
        );
    }

    #[test]
    fn pods_created_after_the_watch_or_opted_out_are_left_alone() {
        let mut opted_out = old_pod("opted", 10, true, true, false);
        opted_out.opted_out = true;
        let selected = [old_pod("late", 2000, true, true, false), opted_out];
        let plan = decide(&selected, None);
        assert_eq!(plan.decision, Decision::Done);
        assert!(plan.bare.is_empty());
    }

    #[test]
    fn host_pid_and_windows_pods_are_never_evicted() {
        let mut host = old_pod("host", 10, true, true, false);
        let mut windows = old_pod("windows", 10, true, true, false);
        let mut by_node = old_pod("by-node", 10, true, true, false);
        let spec = |p: &mut SelectedPod| Arc::make_mut(&mut p.pod).spec.as_mut().unwrap().clone();
        let mut host_spec = spec(&mut host);
        host_spec.host_pid = Some(true);
        Arc::make_mut(&mut host.pod).spec = Some(host_spec);
        let mut windows_spec = spec(&mut windows);
        windows_spec.os = Some(k8s_openapi::api::core::v1::PodOS {
            name: "windows".into(),
        });
        Arc::make_mut(&mut windows.pod).spec = Some(windows_spec);
        let mut node_spec = spec(&mut by_node);
        node_spec.node_selector = Some(
            [("kubernetes.io/os".to_string(), "windows".to_string())]
                .into_iter()
                .collect(),
        );
        Arc::make_mut(&mut by_node.pod).spec = Some(node_spec);
        let plan = decide(&[host, windows, by_node], None);
        assert_eq!(plan.decision, Decision::Done);
    }
}
