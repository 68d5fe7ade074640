//! What the commands render: each watch with its status and the pods its selector matches,
//! and the notes about what the status leaves out.

use k8s_openapi::jiff::Timestamp;
use procwatch_crds::{ContainerReport, PodReport, ProcessWatch, ProcessWatchStatus};

use crate::table::{Column, text};

/// One ProcessWatch as the plugin read it.
#[derive(Clone, Debug)]
pub struct Watch {
    pub namespace: String,
    pub name: String,
    pub max_pods: u32,
    pub max_processes: u32,
    /// Empty until the operator first writes it.
    pub status: ProcessWatchStatus,
    /// The pods the selector matches now, by name, when the plugin could list them.
    pub selected: Option<Vec<String>>,
}

impl Watch {
    pub fn new(watch: &ProcessWatch, selected: Option<Vec<String>>) -> Self {
        Watch {
            namespace: watch.metadata.namespace.clone().unwrap_or_default(),
            name: watch.metadata.name.clone().unwrap_or_default(),
            max_pods: watch.spec.report.max_pods,
            max_processes: watch.spec.report.max_processes,
            status: watch.status.clone().unwrap_or_default(),
            selected,
        }
    }
}

/// What every command is given: the watches, the moment of reading, which namespaces to show.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub watches: &'a [Watch],
    pub now: Timestamp,
    /// `-A`: a NAMESPACE column first.
    pub all_namespaces: bool,
}

/// One container of one pod of one watch, the unit every table is made of.
#[derive(Clone, Copy, Debug)]
pub struct Container<'a> {
    pub watch: &'a Watch,
    pub pod: &'a PodReport,
    pub container: &'a ContainerReport,
}

impl<'a> Input<'a> {
    /// Every container of every pod in the detail, sorted by namespace, pod and container.
    /// A pod that two watches report is shown once, from the watch whose report is newer.
    pub fn containers(&self, filter: &Filter) -> Vec<Container<'a>> {
        let mut pods: Vec<(&'a Watch, &'a PodReport)> = self
            .watches
            .iter()
            .flat_map(|w| w.status.pods.iter().map(move |p| (w, p)))
            .filter(|(_, p)| filter.pod.as_ref().is_none_or(|name| *name == p.name))
            .collect();
        pods.sort_by(|(wa, a), (wb, b)| {
            (&wa.namespace, &a.name)
                .cmp(&(&wb.namespace, &b.name))
                .then_with(|| b.reported_at.cmp(&a.reported_at))
        });
        pods.dedup_by(|(wb, b), (wa, a)| wa.namespace == wb.namespace && a.name == b.name);
        let mut containers: Vec<Container<'a>> = pods
            .into_iter()
            .flat_map(|(watch, pod)| {
                pod.containers.iter().map(move |container| Container {
                    watch,
                    pod,
                    container,
                })
            })
            .filter(|c| {
                filter
                    .container
                    .as_ref()
                    .is_none_or(|name| *name == c.container.name)
            })
            .collect();
        containers.sort_by(|a, b| {
            (&a.watch.namespace, &a.pod.name, &a.container.name).cmp(&(
                &b.watch.namespace,
                &b.pod.name,
                &b.container.name,
            ))
        });
        containers
    }

    /// The headers of [`Input::place`]'s cells, then `rest`.
    pub fn columns(&self, rest: impl IntoIterator<Item = Column>) -> Vec<Column> {
        let namespace = self.all_namespaces.then_some(text("NAMESPACE"));
        namespace
            .into_iter()
            .chain([text("POD"), text("CONTAINER")])
            .chain(rest)
            .collect()
    }

    /// The first cells of a row: NAMESPACE (with `-A`), POD, CONTAINER.
    pub fn place(&self, c: &Container) -> Vec<String> {
        let mut cells = Vec::with_capacity(3);
        if self.all_namespaces {
            cells.push(c.watch.namespace.clone());
        }
        cells.push(c.pod.name.clone());
        cells.push(c.container.name.clone());
        cells
    }
}

/// `--pod` and `-c`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// Notes printed under a table: everything the status does not show in detail, one line each.
pub fn gaps(input: &Input, filter: &Filter) -> Vec<String> {
    let mut notes = Vec::new();
    for watch in input.watches {
        let who = if input.all_namespaces {
            format!("watch {}/{}", watch.namespace, watch.name)
        } else {
            format!("watch {}", watch.name)
        };
        let status = &watch.status;
        let wanted = |pod: &str| filter.pod.as_ref().is_none_or(|p| p == pod);
        if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready")
            && ready.status != "True"
        {
            notes.push(format!(
                "{who}: not Ready ({}): {}",
                ready.reason, ready.message
            ));
        } else if status.conditions.is_empty() {
            notes.push(format!("{who}: no status yet"));
        }
        for pod in status.needs_restart.iter().filter(|p| wanted(p)) {
            notes.push(format!(
                "{who}: pod {pod} has no agent (created before the watch): restart it to see its processes"
            ));
        }
        let detailed = status.pods.len() as u32;
        let cut = status.reporting_pods.saturating_sub(detailed);
        let silent = status.attached_pods.saturating_sub(status.reporting_pods);
        let why = match (cut > 0, silent > 0) {
            (true, false) => format!(
                "left out by report.maxPods {}: {detailed} of {} reporting pods are listed",
                watch.max_pods, status.reporting_pods
            ),
            (false, true) => "its agent has not reported yet".to_string(),
            _ => format!(
                "left out by report.maxPods {} or not reported yet",
                watch.max_pods
            ),
        };
        if cut > 0 || silent > 0 {
            match &watch.selected {
                Some(selected) => {
                    for pod in selected.iter().filter(|p| {
                        wanted(p)
                            && !status.needs_restart.contains(p)
                            && !status.pods.iter().any(|d| &d.name == *p)
                    }) {
                        notes.push(format!("{who}: pod {pod} is not in the detail ({why})"));
                    }
                }
                None => notes.push(match cut + silent {
                    1 => format!("{who}: 1 pod is not in the detail ({why})"),
                    n => format!("{who}: {n} pods are not in the detail ({why})"),
                }),
            }
        }
        for pod in status.pods.iter().filter(|p| wanted(&p.name)) {
            for c in pod.containers.iter().filter(|c| {
                c.truncated && filter.container.as_ref().is_none_or(|name| *name == c.name)
            }) {
                notes.push(format!(
                    "{who}: pod {} container {} is truncated: {} of {} processes listed (report.maxProcesses {}, busiest first)",
                    pod.name,
                    c.name,
                    c.processes.len(),
                    c.process_count,
                    watch.max_processes
                ));
            }
        }
    }
    notes
}

/// The table, then the notes, separated by a blank line when both are there.
pub fn with_notes(table: String, notes: &[String]) -> String {
    let mut out = table;
    if !out.is_empty() && !notes.is_empty() {
        out.push('\n');
    }
    for note in notes {
        out.push_str(note);
        out.push('\n');
    }
    out
}
