//! A container's `unreadable` lines: what could not be read, of which processes, and why.

use std::collections::BTreeMap;

use crate::procfs_read::ReadFailure;

/// At most this many pids are named in one `unreadable` line.
const MAX_PIDS_PER_NOTE: usize = 8;

/// `unreadable` lines, collected per (what, reason) so one line names many pids.
#[derive(Debug, Default)]
pub(super) struct Notes(BTreeMap<(String, String), Vec<i32>>);

impl Notes {
    pub(super) fn add(&mut self, what: &str, pid: i32, reason: String) {
        self.0
            .entry((what.to_string(), reason))
            .or_default()
            .push(pid);
    }

    /// A line of its own, about no process.
    pub(super) fn add_line(&mut self, line: String) {
        self.0.entry((line, String::new())).or_default();
    }

    pub(super) fn render(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|((what, reason), pids)| match pids.as_slice() {
                [] => what,
                [pid] => format!("{what} of pid {pid}: {reason}"),
                _ => {
                    let mut named: Vec<String> = pids
                        .iter()
                        .take(MAX_PIDS_PER_NOTE)
                        .map(i32::to_string)
                        .collect();
                    if pids.len() > MAX_PIDS_PER_NOTE {
                        named.push(format!("and {} more", pids.len() - MAX_PIDS_PER_NOTE));
                    }
                    format!("{what} of pids {}: {reason}", named.join(", "))
                }
            })
            .collect()
    }
}

/// The line of a list cut at its limit: how much was left out.
pub(super) fn left_out(what: &str, count: usize, limit: usize) -> String {
    format!("{what}: {count} more not listed (at most {limit} per container)")
}

/// `text` up to its last complete line: a read cut at its limit may end inside one.
pub(super) fn whole_lines(text: &[u8]) -> &[u8] {
    text.iter()
        .rposition(|&b| b == b'\n')
        .map_or(&text[..0], |end| &text[..=end])
}

/// Why a file read up to its limit has a note: what is past the limit was not read.
pub(super) fn read_limit_reason(limit: usize) -> String {
    format!(
        "reached the read limit of {}: the rest not read",
        crate::fingerprint::size_text(limit as u64)
    )
}

/// "Permission denied", and why when the agent lacks the capability that would allow it.
pub(super) fn denied_reason(lacks_ptrace: bool) -> &'static str {
    if lacks_ptrace {
        "permission denied (agent has no CAP_SYS_PTRACE)"
    } else {
        "permission denied"
    }
}

/// Why a file could not be read, as an `unreadable` line says it.
pub(super) fn reason(failure: &ReadFailure, lacks_ptrace: bool) -> String {
    match failure {
        ReadFailure::Denied => denied_reason(lacks_ptrace).to_string(),
        ReadFailure::Gone => "gone".to_string(),
        ReadFailure::NotRegular(kind) => format!("not a regular file ({kind})"),
        ReadFailure::Other(error) => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_file_and_reason_naming_its_pids() {
        let mut notes = Notes::default();
        notes.add("environ", 9, "permission denied".into());
        notes.add("environ", 7, "permission denied".into());
        notes.add("maps", 7, "gone".into());
        notes.add_line("file /etc/x: not found".into());
        assert_eq!(
            notes.render(),
            [
                "environ of pids 9, 7: permission denied",
                "file /etc/x: not found",
                "maps of pid 7: gone",
            ]
        );
    }

    #[test]
    fn many_pids_are_cut_with_a_count() {
        let mut notes = Notes::default();
        for pid in 1..=11 {
            notes.add("fd", pid, "permission denied".into());
        }
        assert_eq!(
            notes.render(),
            ["fd of pids 1, 2, 3, 4, 5, 6, 7, 8, and 3 more: permission denied"]
        );
    }

    #[test]
    fn reasons_say_what_the_agent_lacks() {
        assert_eq!(
            reason(&ReadFailure::Denied, true),
            "permission denied (agent has no CAP_SYS_PTRACE)"
        );
        assert_eq!(reason(&ReadFailure::Denied, false), "permission denied");
        assert_eq!(reason(&ReadFailure::Gone, false), "gone");
        let other = ReadFailure::Other(std::io::Error::other("odd link"));
        assert_eq!(reason(&other, false), "odd link");
    }
}
