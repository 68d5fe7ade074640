//! `kubectl procwatch files`: the requested fingerprints per pod and container, like
//! `sha256sum`, with each file's variants across pods: a pod whose sha256 differs from the
//! majority is marked `DIFFERS`.

use std::collections::BTreeMap;

use crate::table::{self, Width, number, text};
use crate::view::{Filter, Input, gaps, with_notes};

/// How a pod's copy of a file compares with the other pods' copies.
fn verdict(counts: &BTreeMap<&str, usize>, sha: &str) -> &'static str {
    if counts.len() == 1 {
        return "same";
    }
    let top = counts.values().max().copied().unwrap_or(0);
    let leaders = counts.values().filter(|n| **n == top).count();
    match (leaders, counts.get(sha) == Some(&top)) {
        (1, true) => "majority",
        (1, false) => "DIFFERS",
        _ => "split",
    }
}

pub fn render(input: &Input, filter: &Filter, width: Width) -> String {
    let containers = input.containers(filter);
    // (namespace, container, path) -> sha256 -> pods
    let mut variants: BTreeMap<(&str, &str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
    for c in &containers {
        for f in &c.container.files {
            *variants
                .entry((&c.watch.namespace, &c.container.name, &f.path))
                .or_default()
                .entry(&f.sha256)
                .or_default() += 1;
        }
    }
    let columns = input.columns([
        text("PATH"),
        number("SIZE"),
        text("MODE"),
        text("SHA256"),
        text("VARIANT"),
    ]);
    let mut rows = Vec::new();
    let mut notes = gaps(input, filter);
    for c in &containers {
        let mut files: Vec<_> = c.container.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in files {
            let counts = &variants[&(
                c.watch.namespace.as_str(),
                c.container.name.as_str(),
                f.path.as_str(),
            )];
            let mut cells = input.place(c);
            cells.extend([
                f.path.clone(),
                f.size.to_string(),
                f.mode.clone(),
                f.sha256.clone(),
                verdict(counts, &f.sha256).to_string(),
            ]);
            rows.push(cells);
        }
        // A requested file the agent could not fingerprint (absent, unreadable).
        for entry in c
            .container
            .unreadable
            .iter()
            .filter(|u| u.starts_with("file "))
        {
            notes.push(format!(
                "pod {} container {}: {entry}",
                c.pod.name, c.container.name
            ));
        }
    }
    // The summary counts variants over every pod, also those left out of the detail.
    for watch in input.watches {
        for s in &watch.status.summary {
            for fv in &s.file_variants {
                let shown = variants
                    .get(&(
                        watch.namespace.as_str(),
                        s.container.as_str(),
                        fv.path.as_str(),
                    ))
                    .map_or(0, BTreeMap::len);
                if fv.variants as usize > shown && filter.pod.is_none() {
                    notes.push(format!(
                        "watch {}: container {} has {} variants of {} over all {} pods, {shown} in the detail",
                        watch.name, s.container, fv.variants, fv.path, s.pods
                    ));
                }
            }
        }
    }
    with_notes(table::render(&columns, &rows, width), &notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let one = BTreeMap::from([("a", 3)]);
        assert_eq!(verdict(&one, "a"), "same");
        let two = BTreeMap::from([("a", 2), ("b", 1)]);
        assert_eq!(verdict(&two, "a"), "majority");
        assert_eq!(verdict(&two, "b"), "DIFFERS");
        let tie = BTreeMap::from([("a", 1), ("b", 1)]);
        assert_eq!(verdict(&tie, "a"), "split");
    }
}
