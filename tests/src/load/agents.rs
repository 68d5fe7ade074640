//! Simulated agents, all in this process: each posts its pod's report with the agent's own
//! client ([`procwatch_agent::reporter::ReportClient`]: a fresh TLS connection per report, the
//! token file read every time) and follows the operator's answers as the agent's run loop
//! does: the interval it is given, a quick follow-up when the answer names other containers,
//! jittered backoff capped at the interval after a refusal or a 503, a report shrunk to half
//! the refused size after a 413, silence when the workload finished.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use procwatch_agent::reporter::fit;
use procwatch_agent::reporter::{
    BACKOFF_MAX, BACKOFF_MIN, Backoff, FOLLOW_UP, ReportClient, SendError, UNWATCHED_RECHECK,
};
use procwatch_crds::duration::{MAX_INTERVAL, MIN_INTERVAL};
use procwatch_crds::report::{self, AgentReport, Container, ContainerIdentity, PidCursor};

use super::lock;
use super::pods::SimulatedPod;

/// A real agent's report, recorded from `procwatch-agent snapshot` (the operator's golden
/// fixture): one container with sockets, a file fingerprint and libraries.
const RECORDED_REPORT: &str = include_str!("../../../operator/tests/fixtures/report-v1.json");
/// Processes listed per container, as the operator's default `maxProcesses` asks for.
pub const PROCESSES_PER_CONTAINER: u32 = 20;
/// Pids a pod at rest allocates between two scans, as a real agent's reports show them (its own
/// scan thread and a few blocking-pool threads): nothing the status should be rewritten for.
const PIDS_PER_SCAN: std::ops::RangeInclusive<u32> = 1..=4;
const FIRST_PID: u32 = 1000;
const PID_MAX: u32 = 4_194_304;

/// One report exchange, as the client saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub sent_at: Instant,
    pub took: Duration,
    /// `200`, another HTTP status, or what failed (`timeout`, `connect`...).
    pub outcome: String,
}

/// An accepted report of the probe pod: when it was sent and how many processes its first
/// container counted (it alternates, so that every report changes the watch's status).
#[derive(Clone, Copy, Debug)]
pub struct ProbeReport {
    pub sent_at: Instant,
    pub process_count: u32,
}

/// What every agent recorded.
#[derive(Default)]
pub struct Records {
    pub exchanges: Mutex<Vec<Exchange>>,
    pub probe: Mutex<Vec<ProbeReport>>,
}

/// The recorded container, parsed once.
pub fn recorded_container() -> anyhow::Result<Container> {
    let report: AgentReport = serde_json::from_str(RECORDED_REPORT)?;
    report
        .containers
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the recorded report has no container"))
}

/// The report of `pod`: each of its containers lists [`PROCESSES_PER_CONTAINER`] processes
/// copied from the recorded ones under pids of their own, with the recorded sockets, files
/// and libraries.
pub fn pod_report(pod: &SimulatedPod, namespace: &str, recorded: &Container) -> AgentReport {
    let containers = pod
        .containers
        .iter()
        .map(|(name, id)| {
            let processes = (0..PROCESSES_PER_CONTAINER as usize)
                .map(|p| {
                    let mut process = recorded.processes[p % recorded.processes.len()].clone();
                    process.pid = 100 + p as i32;
                    process.ppid = if p == 0 { 0 } else { 100 };
                    process
                })
                .collect();
            Container {
                name: name.clone(),
                container_id: Some(id.clone()),
                process_count: PROCESSES_PER_CONTAINER,
                processes,
                ..recorded.clone()
            }
        })
        .collect();
    AgentReport {
        version: report::VERSION,
        pod_name: pod.name.clone(),
        pod_namespace: namespace.to_string(),
        pod_uid: pod.uid.clone(),
        scanned_at: None,
        containers,
        pids: Some(PidCursor {
            last_pid: FIRST_PID,
            pid_max: Some(PID_MAX),
        }),
        agent_version: "procwatch-loadgen".into(),
        ..AgentReport::default()
    }
}

/// How a failed exchange is counted.
fn outcome(error: &SendError) -> String {
    match error {
        SendError::Refused { status, .. } => status.as_u16().to_string(),
        SendError::UnsupportedVersion(_) => "400 version".into(),
        SendError::Timeout(_) => "timeout".into(),
        SendError::Connect { .. } => "connect".into(),
        SendError::Token { .. } => "token file".into(),
        _ => "http".into(),
    }
}

/// One agent: writes its token where the client reads it, waits `start_after`, then reports
/// until aborted. The probe alternates its first container's process count.
pub struct Agent {
    pub client: ReportClient,
    pub report: AgentReport,
    pub interval: Duration,
    pub start_after: Duration,
    pub probe: bool,
}

impl Agent {
    pub async fn run(mut self, records: Arc<Records>) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        backoff.cap(self.interval);
        let mut body_limit = report::DEFAULT_MAX_REPORT_BYTES;
        let mut known_containers: Vec<ContainerIdentity> = Vec::new();
        let mut delay = self.start_after;
        let mut flip = false;
        loop {
            tokio::time::sleep(delay).await;
            if self.probe {
                flip = !flip;
                if let Some(first) = self.report.containers.first_mut() {
                    first.process_count = PROCESSES_PER_CONTAINER + u32::from(flip);
                }
            }
            self.report.scanned_at = Some(Time(Timestamp::now()));
            if let Some(pids) = &mut self.report.pids {
                pids.last_pid += fastrand::u32(PIDS_PER_SCAN);
            }
            let sent_at = Instant::now();
            let answer = self.client.send(&self.report).await;
            let took = sent_at.elapsed();
            let label = answer.as_ref().map_or_else(outcome, |_| "200".to_string());
            lock(&records.exchanges).push(Exchange {
                sent_at,
                took,
                outcome: label,
            });
            delay = match answer {
                Ok(response) => {
                    if response.workload_finished {
                        return;
                    }
                    if self.probe {
                        lock(&records.probe).push(ProbeReport {
                            sent_at,
                            process_count: self.report.containers[0].process_count,
                        });
                    }
                    backoff.reset();
                    let interval = Duration::from_secs(response.interval_seconds)
                        .clamp(MIN_INTERVAL, MAX_INTERVAL);
                    backoff.cap(interval);
                    let changed = response.containers != known_containers;
                    known_containers = response.containers;
                    if !response.watched {
                        UNWATCHED_RECHECK
                    } else if changed {
                        FOLLOW_UP.min(interval)
                    } else {
                        // A scan's length varies: up to 2% of the interval either way.
                        jittered(interval)
                    }
                }
                Err(SendError::Refused { status, .. }) if status.as_u16() == 413 => {
                    let refused = fit::encoded_len(&self.report);
                    body_limit = refused.min(body_limit) / 2;
                    if fit::fit(&mut self.report, body_limit) < refused {
                        FOLLOW_UP
                    } else {
                        backoff.next_delay()
                    }
                }
                Err(_) => backoff.next_delay(),
            };
        }
    }
}

/// `interval` moved by up to 2% either way.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 50;
    interval - Duration::from_millis(spread) + Duration::from_millis(fastrand::u64(0..=2 * spread))
}

/// Writes the token where the agent's client reads it.
pub fn write_token(dir: &Path, pod: &str, token: &str) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(pod);
    std::fs::write(&path, token)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_have_three_containers_of_twenty_processes_named_by_the_pod() {
        let pod = SimulatedPod {
            name: "load-g00-00000".into(),
            uid: "uid-1".into(),
            group: 0,
            containers: vec![
                ("app".into(), "containerd://a".into()),
                ("proxy".into(), "containerd://b".into()),
                ("log-shipper".into(), "containerd://c".into()),
            ],
        };
        let report = pod_report(&pod, "load", &recorded_container().unwrap());
        assert_eq!(report.containers.len(), 3);
        for container in &report.containers {
            assert_eq!(container.processes.len(), 20);
            assert!(!container.listening.is_empty() && !container.files.is_empty());
            let mut pids: Vec<i32> = container.processes.iter().map(|p| p.pid).collect();
            pids.dedup();
            assert_eq!(pids.len(), 20);
        }
        assert_eq!(
            report.containers[1].container_id.as_deref(),
            Some("containerd://b")
        );
        let size = fit::encoded_len(&report);
        assert!((40_000..200_000).contains(&size), "{size} bytes");
    }

    #[test]
    fn jitter_stays_within_two_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(15));
            assert!(d >= Duration::from_millis(14_700) && d <= Duration::from_millis(15_300));
        }
    }
}
