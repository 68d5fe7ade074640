//! The first pass: the cheap facts of every process (stat, mount namespace, and the cgroup where
//! it tells something new), enough to attribute and rank them all.

use std::collections::HashMap;

use crate::attribution::{self, ProcessIdentity};
use crate::parse::stat::PidStat;
use crate::procfs_read::{ProcRootError, ReadFailure};

use super::cpu::CpuSample;
use super::details::ProcessDetails;
use super::{Deadline, ScanOptions, Scanner, Vanished};

const CGROUP_LIMIT: usize = 64 * 1024;
/// Cgroup files read per mount namespace, in pid order, when none names a container (the
/// host's namespace): a process started into a container's namespace from outside it keeps
/// an outside cgroup, and the container's own processes come after it only when pids wrap.
const UNNAMED_CGROUPS_PER_NAMESPACE: u32 = 3;

/// The cheap facts of one process, read in the first pass.
pub(super) struct Candidate {
    pub(super) stat: PidStat,
    pub(super) identity: ProcessIdentity,
    pub(super) cpu_millicores: u64,
    /// Read in the first pass too when every process will be listed (boxed: most candidates
    /// have none).
    pub(super) details: Option<Box<ProcessDetails>>,
}

impl AsRef<ProcessIdentity> for Candidate {
    fn as_ref(&self) -> &ProcessIdentity {
        &self.identity
    }
}

/// The first pass's result.
pub(super) struct FirstPass {
    pub(super) candidates: Vec<Candidate>,
    /// Processes not read: the deadline came first.
    pub(super) not_read: u32,
    /// Processes whose stat could not be read or parsed.
    pub(super) unreadable: u32,
}

/// What the cgroup files read so far say about one mount namespace.
///
/// A container has a mount namespace of its own, so a process in the namespace of a process
/// that its cgroup places in a container is in that container: one cgroup read (rendering it
/// costs the kernel more than anything else a scan reads on a host with many cgroup
/// hierarchies) attributes the whole namespace. The reading stops at the first cgroup naming a
/// container, or after [`UNNAMED_CGROUPS_PER_NAMESPACE`] that name none.
#[derive(Debug, Default)]
struct NamespaceCgroups {
    unnamed: u32,
    named: bool,
}

impl NamespaceCgroups {
    fn wants_more(&self) -> bool {
        !self.named && self.unnamed < UNNAMED_CGROUPS_PER_NAMESPACE
    }

    fn saw(&mut self, names_a_container: bool) {
        match names_a_container {
            true => self.named = true,
            false => self.unnamed += 1,
        }
    }
}

impl Scanner {
    /// First pass: stat and mount namespace of every process, cgroup where it tells something
    /// new, and the details too when every process will be listed; records the CPU sample.
    /// Stops at `deadline`.
    pub(super) fn read_candidates(
        &mut self,
        options: &ScanOptions,
        vanished: &mut u32,
        deadline: Option<Deadline>,
    ) -> Result<FirstPass, ProcRootError> {
        let mut sample = CpuSample::now();
        let mut buffer = Vec::with_capacity(4096);
        let pids = self.root.pids()?;
        let mut candidates = Vec::with_capacity(pids.len());
        let mut namespaces = HashMap::new();
        let details = (options.max_processes >= pids.len()).then_some(options);
        let mut not_read = 0u32;
        let mut unreadable = 0u32;
        for pid in pids {
            if not_read > 0 || deadline.is_some_and(Deadline::passed) {
                not_read += 1;
                continue;
            }
            match self.read_candidate(pid, &mut buffer, &mut namespaces, details) {
                Ok(Some(candidate)) => {
                    sample.record(&candidate.stat);
                    candidates.push(candidate);
                }
                Ok(None) => unreadable += 1,
                Err(Vanished) => *vanished += 1,
            }
        }
        if let Some(previous) = &self.previous {
            for candidate in &mut candidates {
                if let Some(millicores) =
                    previous.millicores_until(&sample, &candidate.stat, self.units.ticks_per_second)
                {
                    candidate.cpu_millicores = millicores;
                }
            }
        }
        self.previous = Some(sample);
        Ok(FirstPass {
            candidates,
            not_read,
            unreadable,
        })
    }

    /// `Ok(None)` for a process the agent cannot see at all (an unreadable or malformed stat).
    /// A process whose cgroup is not read has no container of its own: attribution gives it
    /// the container of its mount namespace. `details`: read those too, as these options say.
    fn read_candidate(
        &self,
        pid: i32,
        buffer: &mut Vec<u8>,
        namespaces: &mut HashMap<u64, NamespaceCgroups>,
        details: Option<&ScanOptions>,
    ) -> Result<Option<Candidate>, Vanished> {
        let Some(stat) = self.read_stat(pid, buffer)? else {
            return Ok(None);
        };
        let mount_namespace = match self.root.namespace_inode(pid, "ns/mnt") {
            Ok(inode) => Some(inode),
            Err(ReadFailure::Gone) if !self.root.is_alive(pid) => return Err(Vanished),
            // Unreadable without ptrace access, and gone from a zombie: its cgroup tells.
            Err(_) => None,
        };
        // An infrastructure process's own cgroup decides whether it is one (see attribution).
        let infra = attribution::is_infra_command(&stat.comm);
        let mut namespace = mount_namespace.map(|inode| namespaces.entry(inode).or_default());
        let container = if infra || namespace.as_ref().is_none_or(|n| n.wants_more()) {
            let container = match self.root.read_record(pid, "cgroup", buffer, CGROUP_LIMIT) {
                Ok(text) => attribution::container_from_cgroup(text),
                Err(ReadFailure::Gone) => return Err(Vanished),
                Err(_) => None,
            };
            if let Some(namespace) = namespace.as_mut().filter(|_| !infra) {
                namespace.saw(container.is_some());
            }
            container
        } else {
            None
        };
        let details = match details {
            Some(options) => Some(Box::new(self.process_details(&stat, options, buffer)?)),
            None => None,
        };
        Ok(Some(Candidate {
            identity: ProcessIdentity {
                pid,
                command: stat.comm.clone(),
                container,
                mount_namespace,
            },
            stat,
            cpu_millicores: 0,
            details,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_proc::TestProc;
    use super::*;

    #[test]
    fn a_namespace_stops_asking_at_its_first_container_or_after_a_few_that_name_none() {
        let mut named = NamespaceCgroups::default();
        assert!(named.wants_more());
        named.saw(true);
        assert!(!named.wants_more());

        let mut host = NamespaceCgroups::default();
        for _ in 0..UNNAMED_CGROUPS_PER_NAMESPACE {
            assert!(host.wants_more());
            host.saw(false);
        }
        assert!(!host.wants_more());
    }

    const ID: &str = "3f2a9c1b7e0d4c5a8b9e1f2d3c4b5a6978675645342312019f8e7d6c5b4a3921";

    #[test]
    fn the_cgroup_of_one_process_attributes_its_namespace_and_is_not_read_again() {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "nginx");
            proc.link(pid, "ns/mnt", "mnt:[20]");
        }
        proc.file(7, "cgroup", format!("0::/../cri-containerd-{ID}.scope\n"));
        // Would name another container, but the namespace is already known.
        let other = "b".repeat(64);
        proc.file(
            8,
            "cgroup",
            format!("0::/../cri-containerd-{other}.scope\n"),
        );
        let (_, candidates) = proc.first_pass();
        let found: Vec<_> = candidates
            .iter()
            .map(|c| {
                let id = c.identity.container.as_ref().map(|c| c.id.clone());
                (c.identity.pid, id, c.identity.mount_namespace)
            })
            .collect();
        assert_eq!(
            found,
            [(7, Some(ID.to_string()), Some(20)), (8, None, Some(20))]
        );
        assert!(candidates.iter().all(|c| c.details.is_none()));
    }

    #[test]
    fn an_unreadable_stat_hides_the_process_and_details_come_with_listing_all() {
        let proc = TestProc::new();
        proc.process(7, "sh");
        proc.process(8, "sh");
        proc.file(8, "stat", "garbage");
        let mut scanner = proc.scanner();
        let options = ScanOptions {
            max_processes: usize::MAX,
            ..ScanOptions::default()
        };
        let mut vanished = 0;
        let first_pass = scanner
            .read_candidates(&options, &mut vanished, None)
            .unwrap();
        assert_eq!((first_pass.not_read, first_pass.unreadable), (0, 1));
        let candidates = first_pass.candidates;
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].identity.pid, 7);
        assert!(candidates[0].details.is_some());
    }
}
