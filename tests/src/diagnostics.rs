//! What a failed test shows: the namespace's pods, events and logs, and the daemons' logs.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{ContainerState, Event, Pod};
use kube::Client;
use kube::api::{Api, ListParams, LogParams};

use crate::cluster::cluster_dir;

/// Pods (phase, conditions, container states), events (oldest first) and the last 40 log lines
/// of every container of `namespace`.
pub async fn namespace_report(client: &Client, namespace: &str) -> String {
    let mut out = String::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods.list(&ListParams::default()).await {
        Err(e) => {
            let _ = writeln!(out, "pods: error listing: {e}");
        }
        Ok(list) => {
            let _ = writeln!(out, "--- pods of {namespace} ({}) ---", list.items.len());
            for pod in &list.items {
                let name = pod.metadata.name.as_deref().unwrap_or("?");
                let status = pod.status.clone().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "pod {name}: phase={} node={} reason={} message={}",
                    status.phase.as_deref().unwrap_or("?"),
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .unwrap_or("-"),
                    status.reason.as_deref().unwrap_or("-"),
                    status.message.as_deref().unwrap_or("-"),
                );
                for c in status.conditions.iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  condition {}={} {}",
                        c.type_,
                        c.status,
                        c.message.as_deref().unwrap_or("")
                    );
                }
                let statuses = status
                    .init_container_statuses
                    .iter()
                    .flatten()
                    .chain(status.container_statuses.iter().flatten());
                for cs in statuses {
                    let _ = writeln!(
                        out,
                        "  container {}: ready={} restarts={} state={} id={}",
                        cs.name,
                        cs.ready,
                        cs.restart_count,
                        describe_state(cs.state.as_ref()),
                        cs.container_id.as_deref().unwrap_or("-")
                    );
                }
                let containers = pod.spec.iter().flat_map(|s| {
                    s.init_containers
                        .iter()
                        .flatten()
                        .chain(s.containers.iter())
                });
                for c in containers {
                    let params = LogParams {
                        container: Some(c.name.clone()),
                        tail_lines: Some(40),
                        ..Default::default()
                    };
                    match pods.logs(name, &params).await {
                        Ok(logs) if logs.trim().is_empty() => {
                            let _ = writeln!(out, "  logs of {name}/{}: (empty)", c.name);
                        }
                        Ok(logs) => {
                            let _ = writeln!(out, "  logs of {name}/{} (last 40 lines):", c.name);
                            for line in logs.lines() {
                                let _ = writeln!(out, "    | {line}");
                            }
                        }
                        Err(e) => {
                            let _ = writeln!(out, "  logs of {name}/{}: {e}", c.name);
                        }
                    }
                }
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    match events.list(&ListParams::default()).await {
        Err(e) => {
            let _ = writeln!(out, "events: error listing: {e}");
        }
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                    .unwrap_or_default()
            });
            let _ = writeln!(out, "--- events of {namespace} ({}) ---", items.len());
            for e in items {
                let _ = writeln!(out, "{}", event_line(&e));
            }
        }
    }
    out
}

/// One event as a line: `Normal PodAttached ProcessWatch/web: pod … runs the agent (x1)`.
pub(crate) fn event_line(e: &Event) -> String {
    format!(
        "{} {} {}/{}: {} (x{})",
        e.type_.as_deref().unwrap_or("?"),
        e.reason.as_deref().unwrap_or("?"),
        e.involved_object.kind.as_deref().unwrap_or("?"),
        e.involved_object.name.as_deref().unwrap_or("?"),
        e.message.as_deref().unwrap_or("").trim(),
        e.count.unwrap_or(1)
    )
}

fn describe_state(state: Option<&ContainerState>) -> String {
    let Some(state) = state else {
        return "unknown".into();
    };
    if let Some(w) = &state.waiting {
        return format!(
            "waiting({}: {})",
            w.reason.as_deref().unwrap_or("?"),
            w.message.as_deref().unwrap_or("")
        );
    }
    if let Some(t) = &state.terminated {
        return format!(
            "terminated(exit {} {}: {})",
            t.exit_code,
            t.reason.as_deref().unwrap_or("?"),
            t.message.as_deref().unwrap_or("")
        );
    }
    if state.running.is_some() {
        return "running".into();
    }
    "unknown".into()
}

/// The last `lines` lines of every daemon log of the local test cluster
/// (`$PROCWATCH_CLUSTER_DIR/logs/*.log`); empty if there is none.
pub fn daemon_logs(lines: usize) -> String {
    let dir = cluster_dir().join("logs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return String::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read(&f)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        let _ = writeln!(
            out,
            "--- {} (last {} of {} lines) ---",
            f.display(),
            tail.len(),
            all.len()
        );
        for line in tail {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}
