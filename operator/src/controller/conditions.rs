//! The `Attached`, `Reporting` and `Ready` conditions, with reasons and messages that tell a
//! user what to do, next to `Compliant` and `InSync` as [`crate::expectations`] judges them. `lastTransitionTime` changes only when a condition's status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{AttachMode, ExistingPods};

use super::status::Facts;
use crate::expectations::{COMPLIANT, IN_SYNC, Judgement};
use crate::pod_security::{ENFORCE_LABEL, PTRACE_FORBIDDEN};

pub const READY: &str = "Ready";
pub const ATTACHED: &str = "Attached";
pub const REPORTING: &str = "Reporting";
/// Present, and True, only while the spec is invalid: kstatus (Flux's health checks) fails a
/// resource on `Stalled=True`, where it would otherwise wait out its timeout.
pub const STALLED: &str = "Stalled";
/// Ready's reason while the API server refuses the full status.
pub const STATUS_REJECTED: &str = "StatusRejected";

#[derive(Clone)]
struct Verdict {
    ok: bool,
    reason: &'static str,
    message: String,
}

/// The three conditions (and `Stalled` for an invalid spec), `Compliant` and `InSync`, sorted
/// by type, carrying over
/// transition times from `previous`.
pub fn conditions(
    facts: &Facts,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let attached = attached(facts);
    let reporting = reporting(facts);
    let ready = if let Some(invalid) = &facts.invalid_spec {
        Verdict {
            ok: false,
            reason: "InvalidSpec",
            message: format!("{invalid}; fix the spec"),
        }
    } else if let Some(refusal) = &facts.status_rejected {
        Verdict {
            ok: false,
            reason: STATUS_REJECTED,
            message: format!(
                "the API server refused the status: {refusal}; until it accepts one, the status \
                 shows counts, summary and conditions without the pod detail"
            ),
        }
    } else if !attached.ok {
        attached.clone()
    } else if !reporting.ok {
        reporting.clone()
    } else {
        Verdict {
            ok: true,
            reason: "Ready",
            message: format!(
                "{} {} {} {}",
                facts.reporting,
                plural(facts.reporting.into(), "pod reports", "pods report"),
                facts.processes,
                plural(facts.processes, "process", "processes"),
            ),
        }
    };
    // Wait as long as a fix: a stalled watch is not retried by itself.
    let stalled = facts.invalid_spec.as_ref().map(|_| Verdict {
        ok: true,
        ..ready.clone()
    });
    let judged = [
        (COMPLIANT, facts.compliant.clone()),
        (IN_SYNC, facts.in_sync.clone()),
    ]
    .into_iter()
    .filter_map(|(kind, judgement)| Some((kind, judgement?)));
    let mut conditions: Vec<Condition> =
        [(ATTACHED, attached), (READY, ready), (REPORTING, reporting)]
            .into_iter()
            .chain(stalled.map(|verdict| (STALLED, verdict)))
            .map(|(kind, verdict)| {
                let judgement = Judgement {
                    status: if verdict.ok { "True" } else { "False" },
                    reason: verdict.reason,
                    message: verdict.message,
                };
                (kind, judgement)
            })
            .chain(judged)
            .map(|(kind, judgement)| {
                let last_transition_time = previous
                    .iter()
                    .find(|c| c.type_ == kind && c.status == judgement.status)
                    .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
                Condition {
                    type_: kind.to_string(),
                    status: judgement.status.to_string(),
                    reason: judgement.reason.to_string(),
                    message: judgement.message,
                    observed_generation: generation,
                    last_transition_time,
                }
            })
            .collect();
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    conditions
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// A few names, then how many more.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn attached(facts: &Facts) -> Verdict {
    if let Some(invalid) = &facts.invalid_spec {
        return Verdict {
            ok: false,
            reason: "InvalidSpec",
            message: format!("{invalid}; the watch selects no pod until it is fixed"),
        };
    }
    if facts.selected == 0 {
        return Verdict {
            ok: false,
            reason: "NoPodsSelected",
            message: format!(
                "spec.selector matches no running pod in namespace {}",
                facts.namespace
            ),
        };
    }
    let opted_out = match facts.opted_out {
        0 => String::new(),
        n => format!(" ({n} opted out, listed in status.optedOut)"),
    };
    let missing = u32::try_from(facts.without_agent.len()).unwrap_or(u32::MAX);
    if missing == 0
        && let Some(why) = &facts.ptrace_forbidden
    {
        return Verdict {
            ok: true,
            reason: PTRACE_FORBIDDEN,
            message: format!(
                "{} of {} selected pods run the agent{opted_out}, without ptrace: {why}; \
                 environ, fd and maps of other users' processes are reported unreadable \
                 (label the namespace {ENFORCE_LABEL}=privileged to allow ptrace)",
                facts.attached, facts.selected
            ),
        };
    }
    if missing == 0 {
        return Verdict {
            ok: true,
            reason: "AllPodsAttached",
            message: format!(
                "{} of {} selected pods run the agent{opted_out}",
                facts.attached, facts.selected
            ),
        };
    }
    let head = format!(
        "{missing} of {} selected pods have no agent ({})",
        facts.selected,
        some_names(&facts.without_agent)
    );
    let (reason, advice) = match (facts.mode, facts.existing_pods) {
        // The agent authenticates with a projected token volume, and an ephemeral container
        // cannot add a volume to a running pod; the webhook injects only Sidecar watches.
        (AttachMode::Ephemeral, _) => (
            "EphemeralModeUnsupported",
            "this operator does not attach agents as ephemeral containers yet (an ephemeral \
             container cannot get the projected token volume the agent authenticates with); \
             use attach.mode: Sidecar and recreate the pods"
                .to_string(),
        ),
        (AttachMode::Sidecar, ExistingPods::Report) => (
            "PodsNeedRestart",
            "they were created before this watch or while the webhook was unavailable; delete \
             them so their controller recreates them with the agent, or set \
             attach.existingPods: Evict"
                .to_string(),
        ),
        (AttachMode::Sidecar, ExistingPods::Evict) => evict_advice(facts),
    };
    Verdict {
        ok: false,
        reason,
        message: format!("{head}: {advice}{opted_out}"),
    }
}

/// What `existingPods: Evict` does about the pods without the agent.
fn evict_advice(facts: &Facts) -> (&'static str, String) {
    let one = facts.bare.len() == 1;
    let bare = (!facts.bare.is_empty()).then(|| {
        format!(
            "{} {} no controller and {} never evicted, delete {} yourself",
            some_names(&facts.bare),
            if one { "has" } else { "have" },
            if one { "is" } else { "are" },
            if one { "it" } else { "them" },
        )
    });
    let evicting = match &facts.eviction {
        Some(progress) => Some(progress.clone()),
        // Nothing left to evict: the others were created after the watch.
        None if facts.without_agent.len() > facts.bare.len() => Some(
            "pods created after this watch (while the webhook was unavailable) are not evicted, \
             delete them to get the agent"
                .to_string(),
        ),
        None => None,
    };
    let reason = if facts.eviction.is_some() {
        "EvictingPods"
    } else {
        "PodsNeedRestart"
    };
    let advice: Vec<String> = evicting.into_iter().chain(bare).collect();
    (reason, advice.join("; "))
}

fn reporting(facts: &Facts) -> Verdict {
    if facts.attached == 0 {
        return Verdict {
            ok: false,
            reason: "NoAgents",
            message: "no selected pod runs the agent yet".to_string(),
        };
    }
    if facts.silent.is_empty() {
        return Verdict {
            ok: true,
            reason: "AllAgentsReporting",
            message: format!(
                "{} of {} agents reported within the last {}s",
                facts.reporting,
                facts.attached,
                facts.stale_after.as_secs()
            ),
        };
    }
    let example = &facts.silent[0];
    Verdict {
        ok: false,
        reason: "AgentsNotReporting",
        message: format!(
            "{} of {} agents did not report within the last {}s ({}); a new pod's agent reports \
             after its first scan, otherwise see kubectl logs -n {} {example} -c {AGENT_CONTAINER_NAME}",
            facts.silent.len(),
            facts.attached,
            facts.stale_after.as_secs(),
            some_names(&facts.silent),
            facts.namespace,
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use std::time::Duration;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn facts() -> Facts {
        Facts {
            namespace: "shop".into(),
            selected: 3,
            attached: 3,
            reporting: 3,
            processes: 27,
            stale_after: Duration::from_secs(45),
            ..Facts::default()
        }
    }

    pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn compliant_and_in_sync_appear_only_when_judged_and_keep_their_transition_time() {
        let kinds = |facts: &Facts| -> Vec<String> {
            conditions(facts, Some(1), &[], &time(10))
                .into_iter()
                .map(|c| c.type_)
                .collect()
        };
        assert_eq!(kinds(&facts()), [ATTACHED, READY, REPORTING]);
        let judged = Facts {
            compliant: Some(Judgement {
                status: "False",
                reason: "ExpectationViolated",
                message: "1 violation".into(),
            }),
            in_sync: Some(Judgement {
                status: "Unknown",
                reason: "NoReports",
                message: "no pod has reported yet".into(),
            }),
            ..facts()
        };
        assert_eq!(
            kinds(&judged),
            [ATTACHED, COMPLIANT, IN_SYNC, READY, REPORTING]
        );
        let first = conditions(&judged, Some(1), &[], &time(10));
        let again = conditions(&judged, Some(1), &first, &time(20));
        let compliant = find(&again, COMPLIANT);
        assert_eq!(
            (compliant.status.as_str(), compliant.reason.as_str()),
            ("False", "ExpectationViolated")
        );
        assert_eq!(compliant.last_transition_time, time(10));
        assert_eq!(find(&again, IN_SYNC).status, "Unknown");
    }

    #[test]
    fn an_invalid_spec_is_stalled_for_kstatus_and_only_then() {
        let invalid = Facts {
            invalid_spec: Some("spec.selector: bad".into()),
            ..facts()
        };
        let conditions = conditions(&invalid, Some(4), &[], &time(10));
        let kinds: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, [ATTACHED, READY, REPORTING, STALLED]);
        let stalled = find(&conditions, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(stalled.message, find(&conditions, READY).message);
        let fine = super::conditions(&facts(), Some(4), &[], &time(10));
        assert!(fine.iter().all(|c| c.type_ != STALLED), "{fine:?}");
    }

    #[test]
    fn a_refused_status_makes_ready_false_with_the_servers_words() {
        let facts = Facts {
            status_rejected: Some("status.pods: Invalid value".into()),
            ..facts()
        };
        let conditions = conditions(&facts, Some(4), &[], &time(10));
        let ready = find(&conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", STATUS_REJECTED)
        );
        assert!(
            ready.message.contains("status.pods: Invalid value"),
            "{}",
            ready.message
        );
        assert_eq!(
            find(&conditions, REPORTING).status,
            "True",
            "the agents do report"
        );
        assert_eq!(find(&conditions, ATTACHED).status, "True");
    }

    #[test]
    fn ptrace_forbidden_by_pod_security_is_the_attached_reason() {
        let facts = Facts {
            ptrace_forbidden: Some("the namespace enforces Pod Security level \"baseline\"".into()),
            ..facts()
        };
        let conditions = conditions(&facts, Some(4), &[], &time(10));
        let attached = find(&conditions, ATTACHED);
        assert_eq!(
            (attached.status.as_str(), attached.reason.as_str()),
            ("True", PTRACE_FORBIDDEN)
        );
        assert!(
            attached.message.contains("baseline"),
            "{}",
            attached.message
        );
        assert!(attached.message.contains("without ptrace"));
        assert_eq!(find(&conditions, READY).status, "True");
    }

    #[test]
    fn all_good_is_ready() {
        let conditions = conditions(&facts(), Some(4), &[], &time(10));
        let kinds: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, [ATTACHED, READY, REPORTING]);
        let ready = find(&conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(ready.message, "3 pods report 27 processes");
        assert_eq!(ready.observed_generation, Some(4));
        assert!(conditions.iter().all(|c| c.status == "True"));
    }

    #[test]
    fn old_pods_get_actionable_advice() {
        let facts = Facts {
            attached: 1,
            reporting: 1,
            without_agent: vec!["web-1".into(), "web-2".into()],
            ..facts()
        };
        let conditions = conditions(&facts, Some(1), &[], &time(10));
        let attached = find(&conditions, ATTACHED);
        assert_eq!(attached.reason, "PodsNeedRestart");
        assert!(
            attached
                .message
                .starts_with("2 of 3 selected pods have no agent (web-1, web-2)")
        );
        assert!(attached.message.contains("attach.existingPods: Evict"));
        let ready = find(&conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PodsNeedRestart")
        );
    }

    #[test]
    fn eviction_progress_and_bare_pods_are_told() {
        let facts = Facts {
            existing_pods: ExistingPods::Evict,
            without_agent: vec!["web-1".into(), "lonely".into()],
            eviction: Some("evicted web-1, waiting for its replacement to be ready".into()),
            bare: vec!["lonely".into()],
            ..facts()
        };
        let conditions = conditions(&facts, None, &[], &time(1));
        let attached = find(&conditions, ATTACHED);
        assert_eq!(attached.reason, "EvictingPods");
        assert!(attached.message.contains("waiting for its replacement"));
        assert!(
            attached
                .message
                .contains("lonely has no controller and is never evicted"),
            "{}",
            attached.message
        );
    }

    #[test]
    fn nothing_to_evict_is_not_called_evicting() {
        let facts = Facts {
            existing_pods: ExistingPods::Evict,
            attached: 1,
            reporting: 1,
            without_agent: vec!["lonely".into(), "late".into()],
            bare: vec!["lonely".into()],
            ..facts()
        };
        let conditions = conditions(&facts, None, &[], &time(1));
        let attached = find(&conditions, ATTACHED);
        assert_eq!(attached.reason, "PodsNeedRestart");
        assert!(
            attached.message.contains("created after this watch"),
            "{}",
            attached.message
        );
        assert!(attached.message.contains("lonely has no controller"));
        assert!(!attached.message.contains("one at a time"));
    }

    #[test]
    fn ephemeral_mode_says_it_is_unsupported() {
        let facts = Facts {
            mode: AttachMode::Ephemeral,
            attached: 0,
            reporting: 0,
            without_agent: vec!["web-1".into(), "web-2".into(), "web-3".into()],
            ..facts()
        };
        let conditions = conditions(&facts, None, &[], &time(1));
        assert_eq!(find(&conditions, READY).reason, "EphemeralModeUnsupported");
        assert!(
            find(&conditions, ATTACHED)
                .message
                .contains("attach.mode: Sidecar")
        );
    }

    #[test]
    fn silent_agents_point_at_their_logs() {
        let facts = Facts {
            reporting: 2,
            silent: vec!["web-3".into()],
            ..facts()
        };
        let conditions = conditions(&facts, None, &[], &time(1));
        let reporting = find(&conditions, REPORTING);
        assert_eq!(reporting.reason, "AgentsNotReporting");
        assert!(
            reporting
                .message
                .contains("kubectl logs -n shop web-3 -c procwatch-agent")
        );
    }

    #[test]
    fn no_pods_and_invalid_specs() {
        let none = Facts {
            selected: 0,
            attached: 0,
            reporting: 0,
            ..facts()
        };
        let conditions = conditions(&none, None, &[], &time(1));
        assert_eq!(find(&conditions, READY).reason, "NoPodsSelected");
        assert_eq!(find(&conditions, REPORTING).reason, "NoAgents");

        let invalid = Facts {
            invalid_spec: Some("spec.selector: bad".into()),
            ..none
        };
        let conditions = super::conditions(&invalid, None, &[], &time(1));
        assert_eq!(find(&conditions, READY).reason, "InvalidSpec");
        assert_eq!(find(&conditions, ATTACHED).reason, "InvalidSpec");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = conditions(&facts(), None, &[], &time(10));
        let again = conditions(
            &Facts {
                processes: 5,
                ..facts()
            },
            None,
            &first,
            &time(20),
        );
        assert_eq!(find(&again, READY).last_transition_time, time(10));
        assert_eq!(find(&again, READY).message, "3 pods report 5 processes");
        let broken = Facts {
            silent: vec!["a".into()],
            reporting: 2,
            ..facts()
        };
        let changed = conditions(&broken, None, &again, &time(30));
        assert_eq!(find(&changed, READY).last_transition_time, time(30));
        assert_eq!(find(&changed, ATTACHED).last_transition_time, time(10));
    }
}
