//! `kubectl procwatch ps`: one row per process, like `ps`, with the pod and container in front;
//! `--tree` draws each pod's forest like `ps axf`.

use std::collections::{BTreeMap, BTreeSet};

use procwatch_crds::ProcessInfo;
use serde::Serialize;

use crate::age;
use crate::table::{self, Width, number, text};
use crate::view::{Container, Filter, Input, gaps, with_notes};

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub filter: Filter,
    pub tree: bool,
    /// `-o wide`: a WATCH column, and lines never cut.
    pub wide: bool,
}

/// One process with where it runs: the rows of `-o json|yaml`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Row<'a> {
    pub namespace: &'a str,
    pub watch: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    #[serde(flatten)]
    pub process: &'a ProcessInfo,
}

/// The rows in table order: pod, container, pid (or the forest's order with `tree`), each with
/// its depth in the forest (0 without `tree`).
fn ordered<'a>(
    containers: &[Container<'a>],
    tree: bool,
) -> Vec<(Container<'a>, &'a ProcessInfo, usize)> {
    let mut flat: Vec<(Container<'a>, &'a ProcessInfo)> = containers
        .iter()
        .flat_map(|c| c.container.processes.iter().map(move |p| (*c, p)))
        .collect();
    if !tree {
        flat.sort_by_key(|(c, p)| (&c.watch.namespace, &c.pod.name, &c.container.name, p.pid));
        return flat.into_iter().map(|(c, p)| (c, p, 0)).collect();
    }
    // Containers of a pod share one process namespace: a parent may be in another container.
    let mut by_pod: BTreeMap<(&str, &str), Vec<(Container<'a>, &'a ProcessInfo)>> = BTreeMap::new();
    for (c, p) in flat {
        by_pod
            .entry((c.watch.namespace.as_str(), c.pod.name.as_str()))
            .or_default()
            .push((c, p));
    }
    let mut out = Vec::new();
    for (_, mut processes) in by_pod {
        processes.sort_by_key(|(_, p)| p.pid);
        let pids: BTreeSet<i32> = processes.iter().map(|(_, p)| p.pid).collect();
        let mut children: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (i, (_, p)) in processes.iter().enumerate() {
            if p.ppid != p.pid && pids.contains(&p.ppid) {
                children.entry(p.ppid).or_default().push(i);
            } else {
                roots.push(i);
            }
        }
        // Depth first, children by pid; a parent cycle (impossible in /proc) cannot loop here
        // because each index is visited from exactly one parent or as a root.
        let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
        while let Some((i, depth)) = stack.pop() {
            let (c, p) = processes[i];
            out.push((c, p, depth));
            if let Some(kids) = children.get(&p.pid) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
    }
    out
}

pub fn rows<'a>(input: &Input<'a>, options: &Options) -> Vec<Row<'a>> {
    ordered(&input.containers(&options.filter), options.tree)
        .into_iter()
        .map(|(c, p, _)| Row {
            namespace: &c.watch.namespace,
            watch: &c.watch.name,
            pod: &c.pod.name,
            container: &c.container.name,
            process: p,
        })
        .collect()
}

pub fn render(input: &Input, options: &Options, width: Width) -> String {
    let watch = options.wide.then_some(text("WATCH"));
    let columns = input.columns(watch.into_iter().chain([
        number("PID"),
        number("PPID"),
        text("USER"),
        text("STAT"),
        number("THR"),
        number("CPU(m)"),
        number("RSS"),
        text("START"),
        text("COMMAND"),
    ]));
    let rows: Vec<Vec<String>> = ordered(&input.containers(&options.filter), options.tree)
        .into_iter()
        .map(|(c, p, depth)| {
            let mut cells = input.place(&c);
            if options.wide {
                cells.push(c.watch.name.clone());
            }
            let command = if p.args.is_empty() {
                format!("[{}]", p.command)
            } else {
                p.args.clone()
            };
            cells.extend([
                p.pid.to_string(),
                p.ppid.to_string(),
                p.user.clone().unwrap_or_else(|| p.uid.to_string()),
                p.state.letter().to_string(),
                p.threads.to_string(),
                p.cpu_millicores.to_string(),
                table::bytes(p.memory_bytes),
                p.started_at
                    .as_ref()
                    .map_or_else(|| "<unknown>".to_string(), |t| age::since(t.0, input.now)),
                // `ps axf`: each level indented, a child marked with `\_`.
                match depth {
                    0 => command,
                    d => format!("{} \\_ {command}", " ".repeat(4 * (d - 1) + 1)),
                },
            ]);
            cells
        })
        .collect();
    let width = if options.wide {
        Width::Unlimited
    } else {
        width
    };
    with_notes(
        table::render(&columns, &rows, width),
        &gaps(input, &options.filter),
    )
}
