//! Kubernetes Events for what changed on a watch: a pod attached, a pod that needs a restart,
//! an eviction, the watch becoming ready or no longer ready, a status the API server refused,
//! and what [`crate::expectations`] finds new: violations, drift, started processes.
//! Pod changes are found by comparing with what this
//! process saw last; after a restart the first look only remembers, so a new leader does not
//! repeat old news.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::conditions::{ATTACHED, READY, STATUS_REJECTED};
use crate::expectations::News;
use crate::pod_security::PTRACE_FORBIDDEN;
use procwatch_crds::ProcessWatchStatus;

/// Which pods of a watch had the agent and which needed a restart, at the last reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub attached: BTreeSet<String>,
    pub needs_restart: BTreeSet<String>,
    pub opted_out: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    PodAttached(String),
    PodNeedsRestart(String),
    /// The pod's owner declined the agent.
    PodOptedOut(String),
    PodEvicted(String),
    EvictionBlocked {
        pod: String,
        why: String,
    },
    Ready(String),
    /// Ready turned False: the condition's reason and message.
    NotReady {
        reason: String,
        message: String,
    },
    /// The API server refused the full status with this message.
    StatusRejected(String),
    /// The namespace's Pod Security level forbids the ptrace agent: the Attached message.
    PtraceForbidden(String),
    /// What runs in a pod newly breaks `spec.expect`.
    ExpectationViolated {
        pod: String,
        message: String,
    },
    /// The last violation cleared.
    ExpectationMet,
    /// A requested file of a pod newly differs from the reference content.
    ConfigDrift {
        pod: String,
        message: String,
    },
    /// A process appeared in a container that had already reported.
    ProcessStarted {
        pod: String,
        message: String,
    },
    /// More processes started in a pod in the last minute than were announced.
    ProcessStartsHeld {
        pod: String,
        count: u32,
    },
}

impl From<News> for Change {
    fn from(news: News) -> Self {
        match news {
            News::Violated { pod, message } => Change::ExpectationViolated { pod, message },
            News::Met => Change::ExpectationMet,
            News::Drifted { pod, message } => Change::ConfigDrift { pod, message },
            News::Started { pod, message } => Change::ProcessStarted { pod, message },
            News::StartsHeld { pod, count } => Change::ProcessStartsHeld { pod, count },
        }
    }
}

/// Pods that newly have the agent, newly need a restart or newly opted out.
pub fn pod_changes(before: Option<&Membership>, after: &Membership) -> Vec<Change> {
    let Some(before) = before else {
        return Vec::new();
    };
    let attached = after
        .attached
        .difference(&before.attached)
        .map(|pod| Change::PodAttached(pod.clone()));
    let needs_restart = after
        .needs_restart
        .difference(&before.needs_restart)
        .map(|pod| Change::PodNeedsRestart(pod.clone()));
    let opted_out = after
        .opted_out
        .difference(&before.opted_out)
        .map(|pod| Change::PodOptedOut(pod.clone()));
    attached.chain(needs_restart).chain(opted_out).collect()
}

/// The watch became ready, or stopped being ready, with this status write. A fall is news only
/// from a known Ready=True (a new watch that is not ready yet is not one), and a refused status
/// has an event of its own.
pub fn readiness_change(
    before: Option<&ProcessWatchStatus>,
    after: &ProcessWatchStatus,
) -> Option<Change> {
    let ready =
        |status: &ProcessWatchStatus| status.conditions.iter().find(|c| c.type_ == READY).cloned();
    let was_ready = before.and_then(ready).is_some_and(|c| c.status == "True");
    let now = ready(after)?;
    match (was_ready, now.status == "True") {
        (false, true) => Some(Change::Ready(now.message)),
        (true, false) if now.reason != STATUS_REJECTED => Some(Change::NotReady {
            reason: now.reason,
            message: now.message,
        }),
        _ => None,
    }
}

/// The Attached condition newly says that Pod Security forbids ptrace.
pub fn ptrace_change(
    before: Option<&ProcessWatchStatus>,
    after: &ProcessWatchStatus,
) -> Option<Change> {
    let attached = |status: &ProcessWatchStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == ATTACHED && c.reason == PTRACE_FORBIDDEN)
            .cloned()
    };
    let was = before.and_then(attached).is_some();
    let now = attached(after)?;
    (!was).then_some(Change::PtraceForbidden(now.message))
}

impl Change {
    /// The pod the change is about, if any.
    fn pod(&self) -> Option<&str> {
        match self {
            Change::PodAttached(pod)
            | Change::PodNeedsRestart(pod)
            | Change::PodOptedOut(pod)
            | Change::PodEvicted(pod)
            | Change::EvictionBlocked { pod, .. }
            | Change::ExpectationViolated { pod, .. }
            | Change::ConfigDrift { pod, .. }
            | Change::ProcessStarted { pod, .. }
            | Change::ProcessStartsHeld { pod, .. } => Some(pod),
            Change::ExpectationMet
            | Change::Ready(_)
            | Change::NotReady { .. }
            | Change::StatusRejected(_)
            | Change::PtraceForbidden(_) => None,
        }
    }

    /// The Event about the watch; a pod it concerns (in `namespace`, the watch's) is its
    /// related object. That matters: an event recorder folds events with the same reason,
    /// action, regarding and related object into one series and keeps the first note, so
    /// without it the second eviction of a watch would only count up the first one's event
    /// ("evicted pod A", x2) and never name pod B.
    pub fn event(&self, namespace: &str) -> Event {
        let (type_, reason, action, note) = match self {
            Change::PodAttached(pod) => (
                EventType::Normal,
                "PodAttached",
                "Attach",
                format!("pod {pod} runs the agent"),
            ),
            Change::PodNeedsRestart(pod) => (
                EventType::Warning,
                "PodNeedsRestart",
                "Attach",
                format!("pod {pod} has no agent and gets one only when recreated"),
            ),
            Change::PodOptedOut(pod) => (
                EventType::Normal,
                "PodOptedOut",
                "Attach",
                format!(
                    "pod {pod} declined the agent (label procwatch.dev/inject=false or \
                     shareProcessNamespace: false) and is not watched"
                ),
            ),
            Change::PodEvicted(pod) => (
                EventType::Normal,
                "PodEvicted",
                "Evict",
                format!("evicted pod {pod} so that its replacement runs the agent"),
            ),
            Change::EvictionBlocked { pod, why } => (
                EventType::Warning,
                "EvictionBlocked",
                "Evict",
                format!("eviction of pod {pod} refused for now, retrying: {why}"),
            ),
            Change::Ready(message) => (EventType::Normal, "Ready", "Reconcile", message.clone()),
            Change::PtraceForbidden(message) => (
                EventType::Warning,
                PTRACE_FORBIDDEN,
                "Attach",
                message.clone(),
            ),
            // The condition's reason is the event's: a recorder folds a repeated fall into one
            // series, and a fall for another reason is a series of its own.
            Change::NotReady { reason, message } => (
                EventType::Warning,
                reason.as_str(),
                "Reconcile",
                format!("no longer ready: {message}"),
            ),
            Change::ExpectationViolated { message, .. } => (
                EventType::Warning,
                "ExpectationViolated",
                "Judge",
                message.clone(),
            ),
            Change::ExpectationMet => (
                EventType::Normal,
                "ExpectationMet",
                "Judge",
                "every reporting pod meets spec.expect again".to_string(),
            ),
            Change::ConfigDrift { message, .. } => (
                EventType::Warning,
                "ConfigDrift",
                "Compare",
                message.clone(),
            ),
            Change::ProcessStarted { message, .. } => (
                EventType::Normal,
                "ProcessStarted",
                "Observe",
                message.clone(),
            ),
            Change::ProcessStartsHeld { pod, count } => (
                EventType::Normal,
                "ProcessStartsHeld",
                "Observe",
                format!(
                    "{count} more {} started in pod {pod} in the last minute without an event \
                     of its own (at most {} a minute per pod)",
                    if *count == 1 { "process" } else { "processes" },
                    crate::expectations::churn::EVENTS_PER_WINDOW
                ),
            ),
            Change::StatusRejected(message) => (
                EventType::Warning,
                STATUS_REJECTED,
                "WriteStatus",
                format!(
                    "the API server refused the status; writing it without the pod detail: \
                     {message}"
                ),
            ),
        };
        Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: self.pod().map(|pod| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectReference::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    fn members(attached: &[&str], needs_restart: &[&str]) -> Membership {
        Membership {
            attached: attached.iter().map(|s| s.to_string()).collect(),
            needs_restart: needs_restart.iter().map(|s| s.to_string()).collect(),
            opted_out: BTreeSet::new(),
        }
    }

    #[test]
    fn a_pod_that_newly_opts_out_is_named_once() {
        let before = members(&["a"], &[]);
        let mut after = before.clone();
        after.opted_out.insert("declined".into());
        let changes = pod_changes(Some(&before), &after);
        assert_eq!(changes, [Change::PodOptedOut("declined".into())]);
        let event = changes[0].event("shop");
        assert_eq!(event.reason, "PodOptedOut");
        assert!(
            event
                .note
                .unwrap()
                .contains("pod declined declined the agent")
        );
        assert_eq!(event.secondary.unwrap().name.as_deref(), Some("declined"));
        assert!(pod_changes(Some(&after), &after).is_empty());
    }

    #[test]
    fn only_new_members_make_events() {
        assert!(
            pod_changes(None, &members(&["a"], &["b"])).is_empty(),
            "first look only remembers"
        );
        let changes = pod_changes(
            Some(&members(&["a"], &["b"])),
            &members(&["a", "c"], &["b", "d"]),
        );
        assert_eq!(
            changes,
            [
                Change::PodAttached("c".into()),
                Change::PodNeedsRestart("d".into())
            ]
        );
    }

    fn with_attached_because(reason: &str) -> ProcessWatchStatus {
        ProcessWatchStatus {
            conditions: vec![Condition {
                type_: ATTACHED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: format!("because {reason}"),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..ProcessWatchStatus::default()
        }
    }

    #[test]
    fn ptrace_forbidden_is_announced_once_as_a_warning() {
        let before = with_attached_because("AllPodsAttached");
        let after = with_attached_because(PTRACE_FORBIDDEN);
        let change = ptrace_change(Some(&before), &after).expect("an event");
        let event = change.event("shop");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, PTRACE_FORBIDDEN);
        assert_eq!(ptrace_change(Some(&after), &after), None);
        assert!(ptrace_change(None, &after).is_some());
    }

    #[test]
    fn events_about_pods_name_the_pod_as_related_object() {
        let first = Change::PodEvicted("web-1".into()).event("shop");
        let second = Change::PodEvicted("web-2".into()).event("shop");
        // Same reason and action: only the related pod keeps them apart in a recorder.
        assert_eq!(
            (&first.reason, &first.action),
            (&second.reason, &second.action)
        );
        let related = first.secondary.expect("a related pod");
        assert_eq!(
            (
                related.kind.as_deref(),
                related.name.as_deref(),
                related.namespace.as_deref()
            ),
            (Some("Pod"), Some("web-1"), Some("shop"))
        );
        assert_ne!(Some(related), second.secondary);
        assert!(
            Change::Ready("ok".into()).event("shop").secondary.is_none(),
            "the watch's own events concern no pod"
        );
    }

    fn with_ready(status: &str) -> ProcessWatchStatus {
        with_ready_because(status, "Ready", "3 pods report 27 processes")
    }

    fn with_ready_because(status: &str, reason: &str, message: &str) -> ProcessWatchStatus {
        ProcessWatchStatus {
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..ProcessWatchStatus::default()
        }
    }

    #[test]
    fn ready_once_when_it_turns_true() {
        let ready = with_ready("True");
        assert_eq!(
            readiness_change(Some(&with_ready("False")), &ready),
            Some(Change::Ready("3 pods report 27 processes".into()))
        );
        assert_eq!(
            readiness_change(None, &ready).map(|c| c.event("shop").reason),
            Some("Ready".into())
        );
        assert_eq!(readiness_change(Some(&ready), &ready), None);
    }

    #[test]
    fn a_fall_from_ready_is_a_warning_with_the_reason() {
        let ready = with_ready("True");
        let silent = with_ready_because("False", "AgentsNotReporting", "1 of 3 agents silent");
        let change = readiness_change(Some(&ready), &silent).expect("a fall is news");
        let event = change.event("shop");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "AgentsNotReporting");
        assert_eq!(
            event.note.as_deref(),
            Some("no longer ready: 1 of 3 agents silent")
        );
        // Still not ready, or never was: nothing new.
        assert_eq!(readiness_change(Some(&silent), &silent), None);
        assert_eq!(readiness_change(None, &silent), None);
        // A refused status announces itself with its own event.
        let refused = with_ready_because("False", STATUS_REJECTED, "refused");
        assert_eq!(readiness_change(Some(&ready), &refused), None);
    }

    #[test]
    fn a_refused_status_is_a_warning_naming_the_servers_message() {
        let event = Change::StatusRejected("status.pods: Invalid value".into()).event("shop");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, STATUS_REJECTED);
        assert!(
            event.note.unwrap().contains("status.pods: Invalid value"),
            "the message tells what was refused"
        );
        assert!(event.secondary.is_none());
    }
}
