//! Process churn, from consecutive reports of one pod: the processes that are new, and the
//! pids allocated in between, seen or not.
//!
//! A process is new when its (pid, start time) was not listed before in a container that had
//! reported, and either the previous listing was complete or it started after the previous
//! report: a process that merely moved into the busiest listed ones is not new. A pid reused
//! by another process has another start time, so it is new.
//!
//! Pids are allocated in order in a PID namespace, wrapping from `pid_max - 1` back to 300
//! (the kernel's `RESERVED_PIDS`), so the difference of the last allocated pid between two
//! reports counts every allocation, threads included.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use procwatch_crds::ProcessInfo;
use procwatch_crds::report::PidCursor;

use super::bootstrap::in_runtime_bootstrap;
use crate::report::store::PodFindings;

/// After wrapping around, the kernel allocates pids from here.
const RESERVED_PIDS: u32 = 300;

/// The shortest time a pid rate is measured over. An agent follows its first report up within
/// a second, and the few pids its own threads take in that second would read as hundreds a
/// minute, to be corrected (and the status rewritten) at the next report.
pub const MIN_RATE_SPAN: Duration = Duration::from_secs(10);

/// What this watch saw of one pod at its last report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodTrack {
    uid: String,
    received_at: Option<Timestamp>,
    containers: BTreeMap<String, Listed>,
    cursor: Option<PidCursor>,
    /// Where the rate is measured from: the report that set the last rate, or the first one.
    rate_from: Option<(Timestamp, PidCursor)>,
    /// Pids allocated since the first report this watch saw.
    pub pids_allocated: u64,
    /// Since the report that set the previous rate, at least [`MIN_RATE_SPAN`] before.
    pub pids_per_minute: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Listed {
    /// Every process of the container was listed.
    complete: bool,
    processes: HashSet<(i32, Option<i64>)>,
    names: BTreeMap<i32, String>,
}

/// A process that appeared since the previous report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub container: String,
    pub pid: i32,
    pub uid: u32,
    pub command: String,
    pub ppid: i32,
    /// The parent's command, when listed now or before.
    pub parent: Option<String>,
}

impl Started {
    /// `sh (pid 42, uid 0) started in container nginx of pod web-x, parent nginx (pid 8)`.
    pub fn describe(&self, pod: &str) -> String {
        let parent = match &self.parent {
            Some(name) => format!("{name} (pid {})", self.ppid),
            None => format!("pid {}", self.ppid),
        };
        let command = if self.command.is_empty() {
            "a process"
        } else {
            &self.command
        };
        format!(
            "{command} (pid {}, uid {}) started in container {} of pod {pod}, parent {parent}",
            self.pid, self.uid, self.container
        )
    }
}

/// What one new report tells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub started: Vec<Started>,
    /// Pids allocated since the previous report.
    pub pids_allocated: u64,
}

fn start_second(process: &ProcessInfo) -> Option<i64> {
    process.started_at.as_ref().map(|t| t.0.as_second())
}

impl PodTrack {
    /// Takes in `findings` when they are a report this track has not seen yet; None otherwise.
    /// The first report of a pod (or of a pod recreated under the same name) only sets the
    /// baseline.
    pub fn observe(&mut self, findings: &PodFindings) -> Option<Observed> {
        if self.uid == findings.uid && self.received_at == Some(findings.received_at) {
            return None;
        }
        let first = self.uid != findings.uid || self.received_at.is_none();
        let previous = std::mem::take(self);
        let mut observed = Observed::default();
        for container in &findings.containers {
            // Seen once it runs its command: then it is new.
            let settled: Vec<&ProcessInfo> = container
                .processes
                .iter()
                .filter(|p| !in_runtime_bootstrap(p, findings.received_at))
                .collect();
            let listed = Listed {
                complete: container.processes.len() as u64 >= u64::from(container.process_count),
                processes: settled.iter().map(|p| (p.pid, start_second(p))).collect(),
                names: settled.iter().map(|p| (p.pid, p.command.clone())).collect(),
            };
            if !first && let Some(before) = previous.containers.get(&container.name) {
                let after_previous = |p: &ProcessInfo| {
                    let (Some(started), Some(at)) = (start_second(p), previous.received_at) else {
                        return false;
                    };
                    started >= at.as_second()
                };
                for process in settled {
                    let known = before
                        .processes
                        .contains(&(process.pid, start_second(process)));
                    if !known && (before.complete || after_previous(process)) {
                        let parent = listed
                            .names
                            .get(&process.ppid)
                            .or_else(|| before.names.get(&process.ppid))
                            .filter(|name| !name.is_empty())
                            .cloned();
                        observed.started.push(Started {
                            container: container.name.clone(),
                            pid: process.pid,
                            uid: process.uid,
                            command: process.command.clone(),
                            ppid: process.ppid,
                            parent,
                        });
                    }
                }
            }
            self.containers.insert(container.name.clone(), listed);
        }
        observed
            .started
            .sort_by_key(|s| (s.container.clone(), s.pid));
        self.uid = findings.uid.clone();
        self.received_at = Some(findings.received_at);
        self.cursor = findings.pids.or(if first { None } else { previous.cursor });
        if !first {
            self.pids_allocated = previous.pids_allocated;
            if let (Some(before), Some(now)) = (previous.cursor, findings.pids) {
                let allocated = allocated_between(before, now);
                observed.pids_allocated = allocated;
                self.pids_allocated = self.pids_allocated.saturating_add(allocated);
            }
        }
        (self.rate_from, self.pids_per_minute) = match (previous.rate_from, findings.pids) {
            (Some((since, from)), Some(now)) if !first => {
                let seconds = findings.received_at.duration_since(since).as_secs_f64();
                if seconds >= MIN_RATE_SPAN.as_secs_f64() {
                    let per_minute = allocated_between(from, now) as f64 * 60.0 / seconds;
                    (
                        Some((findings.received_at, now)),
                        Some(per_minute.round() as u64),
                    )
                } else {
                    (previous.rate_from, previous.pids_per_minute)
                }
            }
            (_, now) => (now.map(|now| (findings.received_at, now)), None),
        };
        Some(observed)
    }
}

/// Pids allocated from `before` to `now`: the difference, or across one wrap-around when the
/// last pid went down. Without `pid_max` a wrap cannot be counted: then nothing is.
pub fn allocated_between(before: PidCursor, now: PidCursor) -> u64 {
    if now.last_pid >= before.last_pid {
        return u64::from(now.last_pid - before.last_pid);
    }
    let Some(pid_max) = now.pid_max.or(before.pid_max) else {
        return 0;
    };
    let to_the_end = u64::from(pid_max.saturating_sub(1).saturating_sub(before.last_pid));
    let from_the_start = u64::from(now.last_pid.saturating_sub(RESERVED_PIDS - 1));
    to_the_end + from_the_start
}

/// At most `burst` ProcessStarted events per pod and `window`; the rest are counted and told
/// in one summary event when the window ends.
#[derive(Clone, Debug)]
pub struct StartLimiter {
    window_start: Instant,
    emitted: u32,
    held: u32,
}

pub const EVENTS_PER_WINDOW: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

impl StartLimiter {
    pub fn new(now: Instant) -> Self {
        StartLimiter {
            window_start: now,
            emitted: 0,
            held: 0,
        }
    }

    /// Whether a start may be announced now; a summary of the last window comes first when
    /// it has ended with starts held back.
    pub fn admit(&mut self, now: Instant) -> (bool, Option<u32>) {
        let summary = self.roll(now);
        if self.emitted < EVENTS_PER_WINDOW {
            self.emitted += 1;
            (true, summary)
        } else {
            self.held = self.held.saturating_add(1);
            (false, summary)
        }
    }

    /// Starts held back in a window that has ended, to announce once.
    pub fn roll(&mut self, now: Instant) -> Option<u32> {
        if now.duration_since(self.window_start) < WINDOW {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        self.window_start = now;
        self.emitted = 0;
        (held > 0).then_some(held)
    }

    /// Nothing is pending: the limiter can be dropped.
    pub fn idle(&self, now: Instant) -> bool {
        self.held == 0 && now.duration_since(self.window_start) >= WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use procwatch_crds::ContainerReport;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn process(pid: i32, command: &str, started: i64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            command: command.into(),
            started_at: Some(Time(at(started))),
            ..ProcessInfo::default()
        }
    }

    fn findings(uid: &str, second: i64, processes: Vec<ProcessInfo>, total: u32) -> PodFindings {
        PodFindings {
            uid: uid.into(),
            received_at: at(second),
            containers: vec![ContainerReport {
                name: "nginx".into(),
                process_count: total,
                processes,
                ..ContainerReport::default()
            }],
            skipped: Default::default(),
            pids: None,
            detailed: true,
        }
    }

    fn cursor(last_pid: u32) -> Option<PidCursor> {
        Some(PidCursor {
            last_pid,
            pid_max: Some(32768),
        })
    }

    fn pids(started: &Observed) -> Vec<i32> {
        started.started.iter().map(|s| s.pid).collect()
    }

    #[test]
    fn the_first_report_is_the_baseline_and_a_repeat_is_nothing() {
        let mut track = PodTrack::default();
        let first = findings("u1", 0, vec![process(1, "nginx", -100)], 1);
        assert_eq!(track.observe(&first), Some(Observed::default()));
        assert_eq!(track.observe(&first), None);
    }

    #[test]
    fn a_new_process_is_named_with_its_parent() {
        let mut track = PodTrack::default();
        track.observe(&findings("u1", 0, vec![process(1, "nginx", -100)], 1));
        let mut sleep = process(42, "sleep", 3);
        sleep.uid = 0;
        let observed = track
            .observe(&findings(
                "u1",
                5,
                vec![process(1, "nginx", -100), sleep],
                2,
            ))
            .unwrap();
        assert_eq!(
            observed.started[0].describe("web-x"),
            "sleep (pid 42, uid 0) started in container nginx of pod web-x, parent nginx (pid 1)"
        );
    }

    #[test]
    fn a_kubectl_exec_caught_in_runc_starts_with_its_command() {
        let mut track = PodTrack::default();
        track.observe(&findings("u1", 0, vec![process(1, "nginx", -100)], 1));
        let exec = |command| {
            findings(
                "u1",
                5,
                vec![process(1, "nginx", -100), process(23, command, 4)],
                2,
            )
        };
        let caught = track.observe(&exec("runc:[2:INIT]")).unwrap();
        assert!(caught.started.is_empty(), "{caught:?}");
        let mut then = exec("sleep");
        then.received_at = at(20);
        let started = track.observe(&then).unwrap();
        assert_eq!(pids(&started), [23]);
        assert_eq!(started.started[0].command, "sleep");
    }

    #[test]
    fn a_reused_pid_is_new_and_a_process_entering_the_listing_is_not() {
        let mut track = PodTrack::default();
        // Listed 2 of 3: the listing is incomplete.
        track.observe(&findings(
            "u1",
            10,
            vec![process(1, "nginx", 0), process(7, "a", 2)],
            3,
        ));
        let observed = track
            .observe(&findings(
                "u1",
                20,
                vec![
                    process(1, "nginx", 0),
                    process(7, "b", 15),
                    process(8, "old", 1),
                ],
                3,
            ))
            .unwrap();
        assert_eq!(
            pids(&observed),
            [7],
            "pid 7 reused; pid 8 only moved into the listing"
        );
    }

    #[test]
    fn a_recreated_pod_starts_over() {
        let mut track = PodTrack::default();
        track.observe(&findings("u1", 0, vec![process(1, "nginx", 0)], 1));
        let observed = track
            .observe(&findings(
                "u2",
                5,
                vec![process(1, "nginx", 4), process(2, "x", 4)],
                2,
            ))
            .unwrap();
        assert!(observed.started.is_empty());
    }

    #[test]
    fn a_container_that_had_not_reported_has_no_new_processes() {
        let mut track = PodTrack::default();
        let mut first = findings("u1", 0, vec![], 0);
        first.containers.clear();
        track.observe(&first);
        let observed = track
            .observe(&findings("u1", 5, vec![process(1, "nginx", 4)], 1))
            .unwrap();
        assert!(observed.started.is_empty());
    }

    #[test]
    fn pids_are_counted_between_reports_with_their_rate() {
        let mut track = PodTrack::default();
        track.observe(&pids_at("u1", 0, 1000));
        assert_eq!(track.pids_allocated, 0);
        let observed = track.observe(&pids_at("u1", 30, 4000)).unwrap();
        assert_eq!(observed.pids_allocated, 3000);
        assert_eq!(track.pids_per_minute, Some(6000));
        track.observe(&pids_at("u1", 60, 4010));
        assert_eq!(track.pids_allocated, 3010);
        assert_eq!(track.pids_per_minute, Some(20));
    }

    /// A report of pod `uid` at `second` whose last allocated pid is `last_pid`.
    fn pids_at(uid: &str, second: i64, last_pid: u32) -> PodFindings {
        PodFindings {
            pids: cursor(last_pid),
            ..findings(uid, second, vec![], 0)
        }
    }

    #[test]
    fn a_rate_is_measured_over_ten_seconds_at_least() {
        let mut track = PodTrack::default();
        let mut observe = |second, last_pid| {
            track.observe(&pids_at("u1", second, last_pid));
            (track.pids_allocated, track.pids_per_minute)
        };
        assert_eq!(observe(0, 1000), (0, None));
        // The agent's follow-up a second later: counted, but no rate from 4 pids in 1 s.
        assert_eq!(observe(1, 1004), (4, None));
        // From the first report: 10 pids in 15 s.
        assert_eq!(observe(15, 1010), (10, Some(40)));
        // A report 5 s later keeps the rate; the next one measures from second 15.
        assert_eq!(observe(20, 1100), (100, Some(40)));
        assert_eq!(observe(30, 1110), (110, Some(400)));
    }

    #[test]
    fn a_pod_recreated_under_the_same_name_starts_its_rate_again() {
        let mut track = PodTrack::default();
        track.observe(&pids_at("u1", 0, 1000));
        track.observe(&pids_at("u1", 30, 1030));
        assert_eq!(track.pids_per_minute, Some(60));
        track.observe(&pids_at("u2", 40, 400));
        assert_eq!((track.pids_allocated, track.pids_per_minute), (0, None));
    }

    #[test]
    fn a_wrap_around_counts_up_to_pid_max_and_on_from_300() {
        let before = PidCursor {
            last_pid: 32760,
            pid_max: Some(32768),
        };
        let now = PidCursor {
            last_pid: 310,
            pid_max: Some(32768),
        };
        // 32761..=32767 then 300..=310.
        assert_eq!(allocated_between(before, now), 7 + 11);
        let unknown = |last_pid| PidCursor {
            last_pid,
            pid_max: None,
        };
        assert_eq!(allocated_between(unknown(500), unknown(400)), 0);
        assert_eq!(allocated_between(unknown(400), unknown(500)), 100);
    }

    #[test]
    fn five_events_a_minute_then_one_summary() {
        let start = Instant::now();
        let mut limiter = StartLimiter::new(start);
        let admitted: Vec<bool> = (0..8).map(|_| limiter.admit(start).0).collect();
        assert_eq!(
            admitted,
            [true, true, true, true, true, false, false, false]
        );
        assert_eq!(limiter.roll(start + Duration::from_secs(30)), None);
        assert!(!limiter.idle(start + WINDOW));
        assert_eq!(limiter.roll(start + WINDOW), Some(3));
        assert_eq!(limiter.admit(start + WINDOW), (true, None));
        assert!(limiter.idle(start + WINDOW * 2));
    }
}
