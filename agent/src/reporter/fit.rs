//! Shrinking a report to the operator's body limit: the least busy processes go first, then
//! per-container detail, then the `unreadable` lines beyond a few; each container that lost
//! something is marked truncated and says why.

use procwatch_crds::report::{AgentReport, Container};

/// `unreadable` lines a container keeps when even they do not fit.
const KEPT_NOTES: usize = 8;
/// Room left per container for the line saying what was left out.
const NOTE_ROOM: usize = 160;

/// The encoded size of `value`, as the body will carry it.
pub fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

/// Shrinks `report` until its encoding is at most `limit` bytes, or nothing more can go;
/// returns its encoded size.
pub fn fit(report: &mut AgentReport, limit: usize) -> usize {
    let mut size = encoded_len(report);
    if size <= limit {
        return size;
    }
    // The least busy process of the container with the most listed (lists are busiest first).
    let mut dropped = vec![0usize; report.containers.len()];
    let target = limit.saturating_sub(NOTE_ROOM * report.containers.len());
    while size > target {
        let Some((index, container)) = report
            .containers
            .iter_mut()
            .enumerate()
            .filter(|(_, container)| !container.processes.is_empty())
            .max_by_key(|(_, container)| container.processes.len())
        else {
            break;
        };
        let process = container.processes.pop().expect("filtered on non-empty");
        // With its separating comma.
        size = size.saturating_sub(encoded_len(&process) + 1);
        dropped[index] += 1;
    }
    for (container, dropped) in report.containers.iter_mut().zip(dropped) {
        if dropped > 0 {
            note(
                container,
                format!("{dropped} less busy processes not listed"),
            );
        }
    }
    size = encoded_len(report);
    if size > limit {
        for container in &mut report.containers {
            if !container.listening.is_empty()
                || !container.libraries.is_empty()
                || !container.files.is_empty()
            {
                container.listening.clear();
                container.libraries.clear();
                container.files.clear();
                note(
                    container,
                    "listening sockets, libraries and files not listed".into(),
                );
            }
        }
        size = encoded_len(report);
    }
    if size > limit {
        for container in &mut report.containers {
            container.unreadable.truncate(KEPT_NOTES);
        }
        size = encoded_len(report);
    }
    size
}

fn note(container: &mut Container, what: String) {
    container.truncated = true;
    container.unreadable.insert(
        0,
        format!("{what}: the report had to fit the operator's limit"),
    );
}

#[cfg(test)]
mod tests {
    use procwatch_crds::report::{ListeningSocket, Process, SocketProtocol};

    use super::*;

    fn report(processes: i32) -> AgentReport {
        let container = |name: &str| Container {
            name: name.into(),
            processes: (0..processes)
                .map(|pid| Process {
                    pid,
                    command: "x".repeat(100),
                    ..Process::default()
                })
                .collect(),
            listening: vec![ListeningSocket {
                protocol: SocketProtocol::Unix,
                address: None,
                path: Some("/run/a.sock".into()),
                reachable_at: None,
                pid: Some(1),
            }],
            ..Container::default()
        };
        AgentReport {
            containers: vec![container("app"), container("sidecar")],
            ..AgentReport::default()
        }
    }

    #[test]
    fn a_report_within_the_limit_is_untouched() {
        let mut fitted = report(10);
        let size = fit(&mut fitted, usize::MAX);
        assert_eq!(fitted, report(10));
        assert_eq!(size, encoded_len(&fitted));
    }

    #[test]
    fn the_least_busy_processes_go_first_and_each_container_says_so() {
        let mut fitted = report(100);
        let limit = encoded_len(&report(100)) / 2;
        let size = fit(&mut fitted, limit);
        assert!(size <= limit, "{size} > {limit}");
        assert_eq!(size, encoded_len(&fitted));
        for container in &fitted.containers {
            assert!(container.truncated);
            // The busiest (listed first) stay.
            assert_eq!(container.processes[0].pid, 0);
            let kept = container.processes.len();
            assert_eq!(
                container.unreadable,
                [format!(
                    "{} less busy processes not listed: the report had to fit the operator's limit",
                    100 - kept
                )]
            );
            assert_eq!(container.listening.len(), 1);
        }
    }

    #[test]
    fn then_detail_goes() {
        // Not even the containers without their processes fit.
        let limit = encoded_len(&report(0));
        let mut fitted = report(3);
        let size = fit(&mut fitted, limit);
        assert_eq!(size, encoded_len(&fitted));
        for container in &fitted.containers {
            assert!(container.processes.is_empty() && container.listening.is_empty());
            assert!(container.truncated);
            assert_eq!(
                container.unreadable[0],
                "listening sockets, libraries and files not listed: the report had to fit the operator's limit"
            );
        }
    }
}
