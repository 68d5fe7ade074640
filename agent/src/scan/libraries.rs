//! The files a container's processes map executable: its programs and their libraries.

use std::collections::BTreeSet;

use crate::parse::maps;
use crate::procfs_read::ReadFailure;

use super::candidates::Candidate;
use super::group::{GroupReport, ScanContext};
use super::notes;

/// At most this many libraries per container.
pub const MAX_LIBRARIES: usize = 256;
const MAPS_LIMIT: usize = 4 * 1024 * 1024;

impl ScanContext<'_> {
    /// The libraries of every process of the group, listed or not.
    pub(super) fn collect_libraries(&mut self, group: &mut GroupReport, candidates: &[Candidate]) {
        let mut libraries = BTreeSet::new();
        for &index in &group.ranked {
            let pid = candidates[index].stat.pid;
            match self
                .scanner
                .root
                .read_whole(pid, "maps", &mut self.buffer, MAPS_LIMIT)
            {
                Ok(text) => {
                    let mut text = text;
                    if text.len() >= MAPS_LIMIT {
                        group.report.truncated = true;
                        group
                            .notes
                            .add("maps", pid, notes::read_limit_reason(MAPS_LIMIT));
                        text = notes::whole_lines(text);
                    }
                    if let Err(error) = maps::collect_executable_mappings(text, &mut libraries) {
                        group.notes.add("maps", pid, error.to_string());
                    }
                }
                Err(ReadFailure::Gone) => {}
                Err(failure) => group.notes.add("maps", pid, self.scanner.reason(&failure)),
            }
        }
        if libraries.len() > MAX_LIBRARIES {
            group.report.truncated = true;
            group.notes.add_line(notes::left_out(
                "libraries",
                libraries.len() - MAX_LIBRARIES,
                MAX_LIBRARIES,
            ));
        }
        group.report.libraries = libraries.into_iter().take(MAX_LIBRARIES).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::super::ScanOptions;
    use super::super::test_proc::TestProc;
    use super::*;

    fn libraries_of(proc: &TestProc) -> GroupReport {
        let (scanner, candidates) = proc.first_pass();
        let options = ScanOptions::default();
        let mut context = ScanContext::new(&scanner, &options);
        let mut group = GroupReport::for_test();
        group.ranked = (0..candidates.len()).collect();
        context.collect_libraries(&mut group, &candidates);
        group
    }

    fn mapping(path: &str) -> String {
        format!("7f1c2a000000-7f1c2a028000 r-xp 00028000 08:01 200 {path}\n")
    }

    #[test]
    fn the_union_over_every_process_of_the_group() {
        let proc = TestProc::new();
        proc.process(7, "nginx");
        proc.process(8, "nginx");
        proc.file(
            7,
            "maps",
            mapping("/usr/sbin/nginx") + &mapping("/usr/lib/libc.so.6"),
        );
        proc.file(
            8,
            "maps",
            mapping("/usr/lib/libc.so.6") + &mapping("/usr/lib/libssl.so.3"),
        );
        let group = libraries_of(&proc);
        assert_eq!(
            group.report.libraries,
            [
                "/usr/lib/libc.so.6",
                "/usr/lib/libssl.so.3",
                "/usr/sbin/nginx"
            ]
        );
        assert!(!group.report.truncated);
    }

    #[test]
    fn bounded_and_marked_truncated() {
        let proc = TestProc::new();
        proc.process(7, "big");
        let maps: String = (0..MAX_LIBRARIES + 1)
            .map(|n| mapping(&format!("/lib/lib{n:04}.so")))
            .collect();
        proc.file(7, "maps", maps);
        let group = libraries_of(&proc);
        assert_eq!(group.report.libraries.len(), MAX_LIBRARIES);
        assert!(group.report.truncated);
    }

    #[test]
    fn a_malformed_maps_file_is_noted() {
        let proc = TestProc::new();
        proc.process(7, "odd");
        proc.file(7, "maps", "not a mapping\n");
        let group = libraries_of(&proc);
        assert!(group.report.libraries.is_empty());
        let notes = group.notes.render();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("maps of pid 7: malformed maps"),
            "{notes:?}"
        );
    }
}
