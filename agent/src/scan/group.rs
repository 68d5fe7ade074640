//! One container's report: its processes ranked busiest first, the first `max_processes`
//! listed with their details, totals over all of them, then its per-container facts.

use std::collections::HashMap;

use procwatch_crds::{ContainerReport, ProcessInfo};

use crate::attribution::Group;

use super::candidates::Candidate;
use super::details::ProcessDetails;
use super::notes::Notes;
use super::{Deadline, ScanOptions, Scanner, Vanished};

/// A container's report being built, with what socket attribution needs.
pub(super) struct GroupReport {
    pub(super) report: ContainerReport,
    /// Members in candidate indexes; the first `detailed` of `ranked` have full details.
    pub(super) ranked: Vec<usize>,
    pub(super) detailed: usize,
    /// A listed process of each of the group's network namespaces (`None`: unreadable, read
    /// through the group's first such process), to read the socket tables through.
    pub(super) net_sources: Vec<(i32, Option<u64>)>,
    pub(super) notes: Notes,
}

impl GroupReport {
    fn new(group: Group, members: usize) -> Self {
        GroupReport {
            report: ContainerReport {
                name: group.name,
                container_id: group.container_id,
                ..ContainerReport::default()
            },
            ranked: Vec::with_capacity(members),
            detailed: 0,
            net_sources: Vec::new(),
            notes: Notes::default(),
        }
    }

    /// An empty report of a group named `test`.
    #[cfg(test)]
    pub(super) fn for_test() -> Self {
        let group = Group {
            name: "test".into(),
            container_id: None,
            members: Vec::new(),
        };
        GroupReport::new(group, 0)
    }

    pub(super) fn finish(mut self) -> ContainerReport {
        self.report.unreadable = self.notes.render();
        self.report
    }
}

/// What the per-container readers of one scan share.
pub(super) struct ScanContext<'a> {
    pub(super) scanner: &'a Scanner,
    pub(super) options: &'a ScanOptions,
    /// Scratch space for reads, reused.
    pub(super) buffer: Vec<u8>,
    /// Users of the group being reported, by mount namespace (`None` when not read: one
    /// /etc/passwd for the whole group); `None` when it could not be read.
    pub(super) users: HashMap<Option<u64>, Option<HashMap<u32, String>>>,
    /// Socket inodes held by the listed processes of every group: inode → lowest pid.
    pub(super) socket_owners: HashMap<u64, i32>,
    /// When to stop reading (none for a snapshot).
    pub(super) deadline: Option<Deadline>,
}

/// Busiest first: CPU, then memory, then the lowest pid.
fn rank(members: &mut [usize], candidates: &[Candidate]) {
    members.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        (b.cpu_millicores, b.stat.rss_pages, a.stat.pid).cmp(&(
            a.cpu_millicores,
            a.stat.rss_pages,
            b.stat.pid,
        ))
    });
}

impl<'a> ScanContext<'a> {
    pub(super) fn new(scanner: &'a Scanner, options: &'a ScanOptions) -> Self {
        ScanContext {
            scanner,
            options,
            buffer: Vec::with_capacity(8192),
            users: HashMap::new(),
            socket_owners: HashMap::new(),
            deadline: None,
        }
    }

    /// Whether the scan is past its deadline: what is left is not read, and `group` says so
    /// (`what`: the fact left out).
    pub(super) fn out_of_time(&self, group: &mut GroupReport, what: &str) -> bool {
        let Some(deadline) = self.deadline.filter(|deadline| deadline.passed()) else {
            return false;
        };
        group
            .notes
            .add_line(format!("{what} not read: {}", deadline.reason()));
        group.report.truncated = true;
        true
    }

    pub(super) fn report_group(
        &mut self,
        mut group: Group,
        candidates: &mut [Candidate],
        vanished: &mut u32,
    ) -> GroupReport {
        self.users.clear();
        let mut ranked = std::mem::take(&mut group.members);
        rank(&mut ranked, candidates);
        let mut report = GroupReport::new(group, ranked.len());
        let listed = ranked.len().min(self.options.max_processes);
        report.report.processes.reserve_exact(listed);
        let mut detailed = Vec::with_capacity(listed);
        let mut rest = Vec::with_capacity(ranked.len() - listed);
        let mut out_of_time = false;
        for index in ranked {
            if detailed.len() == self.options.max_processes || out_of_time {
                rest.push(index);
                continue;
            }
            // Details already read in the first pass cost nothing more.
            if candidates[index].details.is_none()
                && self.out_of_time(&mut report, "details of the less busy processes")
            {
                out_of_time = true;
                rest.push(index);
                continue;
            }
            let candidate = &mut candidates[index];
            let details = match candidate.details.take() {
                Some(details) => Ok(*details),
                None => {
                    self.scanner
                        .process_details(&candidate.stat, self.options, &mut self.buffer)
                }
            };
            match details {
                Ok(details) => {
                    let process = self.listed(candidate, details, &mut report);
                    report.report.processes.push(process);
                    detailed.push(index);
                }
                Err(Vanished) => *vanished += 1,
            }
        }
        report.detailed = detailed.len();
        // Totals over every process: the listed ones as listed, the others from their stat.
        let page_size = self.scanner.units.page_size;
        report.report.cpu_millicores = detailed
            .iter()
            .chain(&rest)
            .map(|&index| candidates[index].cpu_millicores)
            .sum();
        report.report.memory_bytes = report
            .report
            .processes
            .iter()
            .map(|process| process.memory_bytes)
            .chain(
                rest.iter()
                    .map(|&index| candidates[index].stat.rss_pages * page_size),
            )
            .sum();
        report.ranked = detailed;
        report.ranked.extend(rest);
        report.report.process_count = report.ranked.len() as u32;
        report.report.truncated |= report.ranked.len() > report.detailed;
        if self.options.libraries && !self.out_of_time(&mut report, "libraries") {
            self.collect_libraries(&mut report, candidates);
        }
        if !self.options.files.is_empty() && !self.out_of_time(&mut report, "files") {
            self.fingerprint_files(&mut report);
        }
        report
    }

    /// A listed process joins its container's report: its notes, sockets and network namespace
    /// go to the container; it gets its CPU use and user name.
    fn listed(
        &mut self,
        candidate: &Candidate,
        details: ProcessDetails,
        group: &mut GroupReport,
    ) -> ProcessInfo {
        let pid = candidate.stat.pid;
        let mut process = details.process;
        process.cpu_millicores = candidate.cpu_millicores;
        for (what, reason) in details.notes {
            group.notes.add(what, pid, reason);
        }
        for inode in details.sockets {
            let owner = self.socket_owners.entry(inode).or_insert(pid);
            *owner = (*owner).min(pid);
        }
        group.report.truncated |= details.truncated;
        // Unknown namespaces (no ptrace access) are read through the group's first process.
        let namespace = details.net_namespace;
        if self.options.sockets && !group.net_sources.iter().any(|&(_, seen)| seen == namespace) {
            group.net_sources.push((pid, namespace));
        }
        process.user = self.user_name(candidate, process.uid, group);
        process
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::ProcessIdentity;
    use crate::parse::stat::parse_pid_stat;

    fn candidate(pid: i32, cpu_millicores: u64, rss_pages: u64) -> Candidate {
        let line = format!("{pid} (sh) S 1 0 0 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 9 0 {rss_pages} 0");
        Candidate {
            stat: parse_pid_stat(line.as_bytes()).unwrap(),
            identity: ProcessIdentity {
                pid,
                command: "sh".into(),
                container: None,
                mount_namespace: None,
            },
            cpu_millicores,
            details: None,
        }
    }

    #[test]
    fn busiest_first_by_cpu_then_memory_then_lowest_pid() {
        let candidates = [
            candidate(1, 0, 10),
            candidate(2, 5, 1),
            candidate(3, 0, 50),
            candidate(4, 0, 10),
        ];
        let mut members = vec![0, 1, 2, 3];
        rank(&mut members, &candidates);
        let pids: Vec<i32> = members.iter().map(|&i| candidates[i].stat.pid).collect();
        assert_eq!(pids, [2, 3, 1, 4]);
    }
}
