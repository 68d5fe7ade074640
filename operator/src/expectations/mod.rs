//! Telling when what runs is not what should: declared expectations ([`rules`]), configuration
//! drift across replicas ([`drift`]) and process churn ([`churn`]), neither judging nor counting
//! a process the container runtime still sets up ([`bootstrap`]). All pure: the controller
//! hands in a watch and its pods' latest findings and gets back the status parts, the
//! `Compliant` and `InSync` conditions, the news to announce as Events and the figures for
//! the metrics.

pub mod bootstrap;
pub mod churn;
pub mod drift;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{
    ContainerReport, MAX_VIOLATIONS, ProcessEvents, ProcessWatch, ProcessWatchSpec,
    ProcessWatchStatus, Violation,
};

use crate::report::store::PodFindings;
use churn::{PodTrack, StartLimiter};
use drift::Comparison;
use rules::{Breach, Rules};

pub const COMPLIANT: &str = "Compliant";
pub const IN_SYNC: &str = "InSync";

/// A condition's verdict: `True`, `False` or `Unknown`, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Judgement {
    fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Judgement {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// A few names, then how many more.
pub(crate) fn some(names: &[impl AsRef<str>]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// The first few problems of a spec, then how many more: a condition's message is bounded.
fn first_problems(problems: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = problems
        .iter()
        .take(SHOWN)
        .map(|p| cut(p.clone(), MAX_MESSAGE_CHARS))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more problems", problems.len() - SHOWN));
    }
    text
}

/// One reporting pod as the watch sees it: its name, its latest findings and the containers
/// the watch reports.
pub struct Reporting<'a> {
    pub pod: String,
    pub findings: &'a PodFindings,
    pub containers: &'a [ContainerReport],
}

/// A violation without its message and time: what stays the same while it lasts.
pub type ViolationKey = (String, String, String, Option<i32>, Option<String>);

fn key(violation: &Violation) -> ViolationKey {
    (
        violation.pod.clone(),
        violation.container.clone(),
        violation.rule.clone(),
        violation.pid,
        violation.command.clone(),
    )
}

/// The watch judged against its pods' latest reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    /// Every violation, sorted (the status lists the first [`MAX_VIOLATIONS`]).
    pub violations: Vec<Violation>,
    /// None without `spec.expect`: nothing is declared, so nothing to comply with.
    pub compliant: Option<Judgement>,
    /// Per container name, per requested path.
    pub comparisons: Vec<Comparison>,
    /// None without `collect.files`: nothing to compare.
    pub in_sync: Option<Judgement>,
}

impl Assessment {
    /// Judges `reporting` against the watch's rules; `previous` is the status shown now, for the
    /// `since` of lasting violations and the order of tied file contents.
    pub fn new(watch: &ProcessWatch, reporting: &[Reporting]) -> Assessment {
        let previous = watch.status.as_ref();
        let rules = Rules::compile(&watch.spec);
        let violations = match &rules {
            Ok(rules) => violations(rules, reporting, previous),
            Err(_) => Vec::new(),
        };
        let compliant = match &rules {
            _ if watch.spec.expect.is_empty() => None,
            Err(problems) => Some(Judgement::new(
                "False",
                "InvalidExpectation",
                format!("{}; fix spec.expect", first_problems(problems)),
            )),
            Ok(_) => Some(compliance(&violations, reporting.len())),
        };
        let declared = rules.unwrap_or_default();
        let comparisons = compare_files(&declared, reporting, previous);
        let in_sync =
            (!watch.spec.collect.files.is_empty()).then(|| in_sync(reporting.len(), &comparisons));
        Assessment {
            violations,
            compliant,
            comparisons,
            in_sync,
        }
    }

    /// The violations the status lists.
    pub fn listed_violations(&self) -> Vec<Violation> {
        self.violations
            .iter()
            .take(MAX_VIOLATIONS)
            .cloned()
            .collect()
    }

    /// Violations per (container, rule), for the metric.
    pub fn violation_counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for v in &self.violations {
            *counts
                .entry((v.container.clone(), v.rule.clone()))
                .or_default() += 1;
        }
        counts
    }
}

/// Characters of a violation's message, and of its command: both come from what agents
/// report, and the status has a byte budget.
const MAX_MESSAGE_CHARS: usize = 300;
const MAX_COMMAND_CHARS: usize = 64;

fn cut(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Every breach of `rules` in `reporting`, each with the time it was first shown (`previous`)
/// or else the time of the report that shows it.
fn violations(
    rules: &Rules,
    reporting: &[Reporting],
    previous: Option<&ProcessWatchStatus>,
) -> Vec<Violation> {
    let since_before: HashMap<ViolationKey, Time> = previous
        .into_iter()
        .flat_map(|status| &status.violations)
        .filter_map(|v| Some((key(v), v.since.clone()?)))
        .collect();
    // A compact report (kept before the watch judged processes) has no process detail to
    // judge: that pod is judged from its next report on.
    let mut violations: Vec<Violation> = reporting
        .iter()
        .filter(|pod| pod.findings.detailed)
        .flat_map(|pod| {
            let received = crate::controller::status::whole_seconds(pod.findings.received_at);
            rules
                .judge(pod.containers, pod.findings.received_at)
                .into_iter()
                .map(move |breach| violation(&pod.pod, breach, &received))
        })
        .collect();
    for violation in &mut violations {
        if let Some(since) = since_before.get(&key(violation)) {
            violation.since = Some(since.clone());
        }
    }
    violations
}

fn compliance(violations: &[Violation], reporting: usize) -> Judgement {
    match violations.first() {
        Some(first) => Judgement::new(
            "False",
            "ExpectationViolated",
            format!(
                "{} {}; first: pod {} container {}: {} (rule {})",
                violations.len(),
                if violations.len() == 1 {
                    "violation"
                } else {
                    "violations"
                },
                first.pod,
                first.container,
                first.message,
                first.rule
            ),
        ),
        None if reporting == 0 => Judgement::new("Unknown", "NoReports", "no pod has reported yet"),
        None => Judgement::new(
            "True",
            "ExpectationsMet",
            format!(
                "{reporting} reporting {} every expectation",
                if reporting == 1 {
                    "pod meets"
                } else {
                    "pods meet"
                }
            ),
        ),
    }
}

fn violation(pod: &str, breach: Breach, received: &Time) -> Violation {
    Violation {
        pod: pod.to_string(),
        container: breach.container,
        pid: breach.pid,
        command: breach.command.map(|c| cut(c, MAX_COMMAND_CHARS)),
        rule: breach.rule.to_string(),
        message: cut(breach.message, MAX_MESSAGE_CHARS),
        since: Some(received.clone()),
    }
}

fn compare_files(
    rules: &Rules,
    reporting: &[Reporting],
    previous: Option<&ProcessWatchStatus>,
) -> Vec<Comparison> {
    // container → path → pod → sha256
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeMap<String, String>>> = BTreeMap::new();
    for pod in reporting {
        for container in pod.containers {
            for file in &container.files {
                seen.entry(&container.name)
                    .or_default()
                    .entry(&file.path)
                    .or_default()
                    .insert(pod.pod.clone(), file.sha256.clone());
            }
        }
    }
    let shown_before = |container: &str, path: &str| -> Vec<String> {
        previous
            .into_iter()
            .flat_map(|status| &status.summary)
            .filter(|summary| summary.container == container)
            .flat_map(|summary| &summary.file_variants)
            .filter(|variants| variants.path == path)
            .flat_map(|variants| &variants.fingerprints)
            .map(|fingerprint| fingerprint.sha256.clone())
            .collect()
    };
    seen.into_iter()
        .flat_map(|(container, paths)| {
            paths
                .into_iter()
                .map(move |(path, pods)| (container, path, pods))
        })
        .map(|(container, path, pods)| {
            Comparison::new(
                container,
                path,
                &pods,
                rules.declared_sha256(container, path),
                &shown_before(container, path),
            )
        })
        .collect()
}

fn in_sync(reporting: usize, comparisons: &[Comparison]) -> Judgement {
    if reporting == 0 {
        return Judgement::new("Unknown", "NoReports", "no pod has reported yet");
    }
    let drifting: Vec<&Comparison> = comparisons
        .iter()
        .filter(|c| !c.minority().is_empty())
        .collect();
    match drifting.first() {
        Some(first) => Judgement::new(
            "False",
            "ConfigDrift",
            match drifting.len() {
                1 => first.describe(),
                n => format!("{}; and {} more files differ", first.describe(), n - 1),
            },
        ),
        None => Judgement::new(
            "True",
            "InSync",
            format!(
                "each requested file has one content across {reporting} reporting {}",
                if reporting == 1 { "pod" } else { "pods" }
            ),
        ),
    }
}

/// Something to announce as an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// Violations newly shown in a pod: the first's message, and how many in all.
    Violated {
        pod: String,
        message: String,
    },
    /// The last violation cleared.
    Met,
    /// A pod newly has another content than the reference.
    Drifted {
        pod: String,
        message: String,
    },
    Started {
        pod: String,
        message: String,
    },
    /// Starts not announced in the last window.
    StartsHeld {
        pod: String,
        count: u32,
    },
}

/// What a watch remembers between reconciles to tell what is new. The first look after the
/// operator starts only remembers, so a new leader does not repeat old news.
#[derive(Default)]
pub struct Memory {
    violations: Option<BTreeSet<ViolationKey>>,
    drifted: Option<BTreeSet<(String, String, String)>>,
    tracks: HashMap<String, PodTrack>,
    limiters: HashMap<String, StartLimiter>,
}

/// Per pod: pids allocated since first seen, and per minute lately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidFigures {
    pub total: u64,
    pub per_minute: Option<u64>,
    /// Since the previous reconcile, for the counter.
    pub since_last: u64,
}

/// The news of one reconcile and the churn figures.
#[derive(Default, Debug)]
pub struct Changes {
    pub news: Vec<News>,
    pub pids: BTreeMap<String, PidFigures>,
    /// New processes per container name, for the counter.
    pub starts: BTreeMap<String, u64>,
}

impl Memory {
    /// Compares the assessment and the pods' latest reports (`reporting`, by pod name) with
    /// what was seen before; only starts in containers the watch reports (`spec.containers`,
    /// empty for all) count.
    pub fn changes(
        &mut self,
        assessment: &Assessment,
        reporting: &[(String, &PodFindings)],
        spec: &ProcessWatchSpec,
        now: Instant,
    ) -> Changes {
        let mut changes = Changes::default();
        self.violation_news(assessment, &mut changes.news);
        self.drift_news(assessment, &mut changes.news);

        let present: BTreeSet<&str> = reporting.iter().map(|(pod, _)| pod.as_str()).collect();
        self.tracks.retain(|pod, _| present.contains(pod.as_str()));
        let watched = |container: &str| {
            container != AGENT_CONTAINER_NAME
                && (spec.containers.is_empty() || spec.containers.iter().any(|c| c == container))
        };
        for (pod, findings) in reporting {
            let track = self.tracks.entry(pod.clone()).or_default();
            let observed = track.observe(findings);
            let figures = PidFigures {
                total: track.pids_allocated,
                per_minute: track.pids_per_minute,
                since_last: observed.as_ref().map_or(0, |o| o.pids_allocated),
            };
            if findings.pids.is_some() {
                changes.pids.insert(pod.clone(), figures);
            }
            let Some(observed) = observed else { continue };
            for started in observed.started.iter().filter(|s| watched(&s.container)) {
                *changes.starts.entry(started.container.clone()).or_default() += 1;
                if spec.report.process_events != ProcessEvents::New {
                    continue;
                }
                let limiter = self
                    .limiters
                    .entry(pod.clone())
                    .or_insert_with(|| StartLimiter::new(now));
                let (admitted, held) = limiter.admit(now);
                if let Some(count) = held {
                    changes.news.push(News::StartsHeld {
                        pod: pod.clone(),
                        count,
                    });
                }
                if admitted {
                    changes.news.push(News::Started {
                        pod: pod.clone(),
                        message: started.describe(pod),
                    });
                }
            }
        }
        for (pod, limiter) in &mut self.limiters {
            if let Some(count) = limiter.roll(now) {
                changes.news.push(News::StartsHeld {
                    pod: pod.clone(),
                    count,
                });
            }
        }
        self.limiters.retain(|_, limiter| !limiter.idle(now));
        changes
    }

    fn violation_news(&mut self, assessment: &Assessment, news: &mut Vec<News>) {
        let now: BTreeSet<ViolationKey> = assessment.violations.iter().map(key).collect();
        let Some(before) = self.violations.replace(now.clone()) else {
            return;
        };
        let mut new_by_pod: BTreeMap<&str, Vec<&Violation>> = BTreeMap::new();
        for violation in &assessment.violations {
            if !before.contains(&key(violation)) {
                new_by_pod
                    .entry(&violation.pod)
                    .or_default()
                    .push(violation);
            }
        }
        for (pod, violations) in new_by_pod {
            let first = violations[0];
            let more = match violations.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            news.push(News::Violated {
                pod: pod.to_string(),
                message: format!(
                    "container {} of pod {pod}: {} (rule {}){more}",
                    first.container, first.message, first.rule
                ),
            });
        }
        if !before.is_empty() && now.is_empty() {
            news.push(News::Met);
        }
    }

    fn drift_news(&mut self, assessment: &Assessment, news: &mut Vec<News>) {
        let mut now = BTreeSet::new();
        let mut references = BTreeMap::new();
        for comparison in &assessment.comparisons {
            for pod in comparison.minority() {
                let drifted = (
                    comparison.container.clone(),
                    comparison.path.clone(),
                    pod.to_string(),
                );
                references.insert(drifted.clone(), comparison.reference());
                now.insert(drifted);
            }
        }
        let Some(before) = self.drifted.replace(now.clone()) else {
            return;
        };
        for drifted in now.difference(&before) {
            let (container, path, pod) = drifted;
            let reference = references.get(drifted).cloned().unwrap_or_default();
            news.push(News::Drifted {
                pod: pod.clone(),
                message: format!(
                    "{path} in container {container} of pod {pod} differs: not {reference}"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{findings, nginx, process, watch};
    use k8s_openapi::jiff::Timestamp;
    use procwatch_crds::Expectation;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn only_nginx() -> ProcessWatch {
        let mut watch = watch("web");
        watch.spec.collect.files = vec!["/etc/nginx/nginx.conf".into()];
        watch.spec.report.process_events = ProcessEvents::New;
        watch.spec.expect = vec![Expectation {
            container: "nginx".into(),
            commands: Some(vec!["nginx".into()]),
            ..Expectation::default()
        }];
        watch
    }

    /// Judges pods (name, commands, sha of nginx.conf) reported at `second`.
    fn assess(
        watch: &ProcessWatch,
        second: i64,
        pods: &[(&str, &[&str], &str)],
    ) -> (Assessment, Vec<(String, PodFindings)>) {
        let reports: Vec<(String, PodFindings)> = pods
            .iter()
            .map(|(pod, commands, sha)| {
                let processes = commands
                    .iter()
                    .enumerate()
                    .map(|(i, c)| process(i32::try_from(i).unwrap() + 1, c, 1))
                    .collect();
                findings(pod, at(second), vec![nginx(processes, sha)])
            })
            .collect();
        let reporting: Vec<Reporting> = reports
            .iter()
            .map(|(pod, findings)| Reporting {
                pod: pod.clone(),
                findings,
                containers: &findings.containers,
            })
            .collect();
        (Assessment::new(watch, &reporting), reports)
    }

    fn news(
        memory: &mut Memory,
        watch: &ProcessWatch,
        assessed: &(Assessment, Vec<(String, PodFindings)>),
    ) -> Vec<News> {
        let reporting: Vec<(String, &PodFindings)> =
            assessed.1.iter().map(|(pod, f)| (pod.clone(), f)).collect();
        memory
            .changes(&assessed.0, &reporting, &watch.spec, Instant::now())
            .news
    }

    #[test]
    fn a_violation_is_news_once_keeps_its_since_and_its_end_is_news() {
        let mut watch = only_nginx();
        let mut memory = Memory::default();
        let healthy = assess(&watch, 0, &[("web-a", &["nginx"], "h")]);
        assert_eq!(healthy.0.compliant.as_ref().unwrap().status, "True");
        assert_eq!(
            news(&mut memory, &watch, &healthy),
            [],
            "the first look only remembers"
        );

        let exec = assess(&watch, 10, &[("web-a", &["nginx", "sleep"], "h")]);
        let compliant = exec.0.compliant.clone().unwrap();
        assert_eq!(compliant.status, "False");
        assert_eq!(
            compliant.message,
            "1 violation; first: pod web-a container nginx: sleep (pid 2) is not one of the \
             expected commands [nginx] (rule commands)"
        );
        let told = news(&mut memory, &watch, &exec);
        assert!(
            told.contains(&News::Violated {
                pod: "web-a".into(),
                message: "container nginx of pod web-a: sleep (pid 2) is not one of the expected \
                      commands [nginx] (rule commands)"
                    .into()
            })
        );
        assert!(told.contains(&News::Started {
            pod: "web-a".into(),
            message:
                "sleep (pid 2, uid 0) started in container nginx of pod web-a, parent pid 0".into()
        }));

        // Shown in the status, it keeps the time it was first seen.
        watch.status = Some(ProcessWatchStatus {
            violations: exec.0.listed_violations(),
            ..ProcessWatchStatus::default()
        });
        let still = assess(&watch, 20, &[("web-a", &["nginx", "sleep"], "h")]);
        assert_eq!(still.0.violations[0].since, exec.0.violations[0].since);
        assert_eq!(news(&mut memory, &watch, &still), []);

        let cleared = assess(&watch, 30, &[("web-a", &["nginx"], "h")]);
        assert_eq!(news(&mut memory, &watch, &cleared), [News::Met]);
    }

    #[test]
    fn a_compact_report_is_not_judged() {
        let watch = only_nginx();
        let (_, mut reports) = assess(&watch, 0, &[("web-a", &["nginx", "sleep"], "h")]);
        let (pod, findings) = &mut reports[0];
        findings.detailed = false;
        let reporting = [Reporting {
            pod: pod.clone(),
            findings,
            containers: &findings.containers,
        }];
        let assessment = Assessment::new(&watch, &reporting);
        assert_eq!(assessment.violations, []);
        assert_eq!(assessment.compliant.unwrap().status, "True");
    }

    #[test]
    fn drift_names_the_minority_pod_once() {
        let mut watch = only_nginx();
        watch.spec.expect.clear();
        let mut memory = Memory::default();
        let same = assess(
            &watch,
            0,
            &[("web-a", &["nginx"], "aa"), ("web-b", &["nginx"], "aa")],
        );
        assert_eq!(same.0.in_sync.as_ref().unwrap().reason, "InSync");
        news(&mut memory, &watch, &same);
        watch.status = Some(ProcessWatchStatus {
            summary: vec![procwatch_crds::ContainerSummary {
                container: "nginx".into(),
                file_variants: same
                    .0
                    .comparisons
                    .iter()
                    .map(Comparison::to_status)
                    .collect(),
                ..Default::default()
            }],
            ..ProcessWatchStatus::default()
        });
        let changed = assess(
            &watch,
            10,
            &[("web-a", &["nginx"], "aa"), ("web-b", &["nginx"], "bb")],
        );
        let in_sync = changed.0.in_sync.clone().unwrap();
        assert_eq!(in_sync.status, "False");
        assert_eq!(
            in_sync.message,
            "/etc/nginx/nginx.conf in container nginx differs in web-b: not aa of web-a (the majority)"
        );
        assert_eq!(
            news(&mut memory, &watch, &changed),
            [News::Drifted {
                pod: "web-b".into(),
                message: "/etc/nginx/nginx.conf in container nginx of pod web-b differs: not aa \
                          of web-a (the majority)"
                    .into()
            }]
        );
        assert_eq!(news(&mut memory, &watch, &changed), []);
    }

    #[test]
    fn conditions_without_rules_files_or_reports() {
        let mut watch = watch("web");
        let (none, _) = assess(&watch, 0, &[]);
        assert_eq!((none.compliant, none.in_sync), (None, None));
        watch.spec = only_nginx().spec;
        let (waiting, _) = assess(&watch, 0, &[]);
        assert_eq!(waiting.compliant.unwrap().status, "Unknown");
        assert_eq!(waiting.in_sync.unwrap().status, "Unknown");
        watch.spec.expect[0].commands = Some(vec!["[".into()]);
        let (invalid, _) = assess(&watch, 0, &[("web-a", &["nginx"], "h")]);
        let compliant = invalid.compliant.unwrap();
        assert_eq!(
            (compliant.status, compliant.reason),
            ("False", "InvalidExpectation")
        );
        assert!(compliant.message.ends_with("; fix spec.expect"));
    }
}
