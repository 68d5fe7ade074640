//! `kubectl procwatch top`: pods (or, with `--containers`, containers) by CPU, then memory,
//! like `kubectl top pod`, from the status: what the agent measured, not the kubelet.

use crate::table::{self, Column, Width, number, text};
use crate::view::{Filter, Input, gaps, with_notes};

pub fn render(input: &Input, filter: &Filter, containers: bool, width: Width) -> String {
    let mut columns: Vec<Column> = Vec::new();
    if input.all_namespaces {
        columns.push(text("NAMESPACE"));
    }
    columns.push(text("POD"));
    if containers {
        columns.push(text("CONTAINER"));
    }
    columns.extend([number("CPU(m)"), number("MEMORY"), number("PROCESSES")]);

    // (place cells, cpu, memory, processes)
    let mut lines: Vec<(Vec<String>, u64, u64, u64)> = Vec::new();
    for c in input.containers(filter) {
        let figures = (
            c.container.cpu_millicores,
            c.container.memory_bytes,
            u64::from(c.container.process_count),
        );
        let place = if containers {
            input.place(&c)
        } else {
            let mut place = input.place(&c);
            place.pop(); // the container: one line per pod
            place
        };
        match lines.last_mut() {
            Some(last) if !containers && last.0 == place => {
                last.1 += figures.0;
                last.2 += figures.1;
                last.3 += figures.2;
            }
            _ => lines.push((place, figures.0, figures.1, figures.2)),
        }
    }
    lines.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(&b.0)));
    let rows: Vec<Vec<String>> = lines
        .into_iter()
        .map(|(mut cells, cpu, memory, processes)| {
            cells.extend([cpu.to_string(), table::bytes(memory), processes.to_string()]);
            cells
        })
        .collect();
    let table = table::render(&columns, &rows, width);
    let mut notes = gaps(input, filter);
    // The summary counts every reporting pod, also those left out of the detail.
    for watch in input.watches {
        let status = &watch.status;
        if status.reporting_pods as usize > status.pods.len() && filter.pod.is_none() {
            for s in status
                .summary
                .iter()
                .filter(|s| filter.container.as_ref().is_none_or(|c| *c == s.container))
            {
                notes.push(format!(
                    "watch {}: container {} over all {} pods: CPU {}m, memory {}, {} processes",
                    watch.name,
                    s.container,
                    s.pods,
                    s.cpu_millicores,
                    table::bytes(s.memory_bytes),
                    s.processes
                ));
            }
        }
    }
    with_notes(table, &notes)
}
