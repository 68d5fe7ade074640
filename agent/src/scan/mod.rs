//! The scanner: one pass over a proc root turned into per-container findings.
//!
//! A scan reads `stat` and the mount namespace of every process, and `cgroup` of only a few per
//! mount namespace (enough to attribute and rank them all), then reads the details (status,
//! command line, descriptors, environment, exe, cwd, user) only of the processes it will list:
//! the busiest `max_processes` of each container. When that is every process, the details are
//! read in the same pass, so each process's /proc directory is opened once. A process that
//! exits meanwhile is skipped and counted; a file the agent may not read becomes a line in the
//! container's `unreadable`.
//!
//! - `cpu`: CPU samples and millicores between two scans;
//! - `candidates`: the first pass (stat, mount namespace, a few cgroups);
//! - `details`: the facts of one listed process from its own files;
//! - `group`: one container's report, its processes ranked and listed;
//! - `users`, `libraries`, `files`: facts read per container;
//! - `sockets`: listening sockets, attributed to the container holding them;
//! - `notes`: the `unreadable` lines;
//! - `pids`: the last pid allocated in the PID namespace.

mod candidates;
mod cpu;
mod details;
mod files;
mod group;
mod libraries;
mod notes;
mod pids;
mod sockets;
mod users;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use procwatch_crds::report::{CollectRequest, ContainerIdentity, PidCursor};
use procwatch_crds::{ContainerReport, EnvironmentPolicy};

use crate::attribution;
use crate::parse::{stat, status};
use crate::procfs_read::{self, ProcRoot, ProcRootError, ReadFailure};

use cpu::CpuSample;
use details::Units;
use group::{GroupReport, ScanContext};

pub use libraries::MAX_LIBRARIES;

/// What to collect, from the operator's `collect` settings or the snapshot's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    pub environment: EnvironmentPolicy,
    pub open_files: bool,
    pub sockets: bool,
    pub libraries: bool,
    /// `exe` and `cwd` of each process (always, in a pod; `snapshot --no-paths` leaves them out).
    pub paths: bool,
    /// Absolute paths to fingerprint inside each container.
    pub files: Vec<String>,
    /// Processes listed per container, busiest first; `usize::MAX` lists all.
    pub max_processes: usize,
    /// Files larger than this are fingerprinted by size and mode only.
    pub max_file_bytes: u64,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions::from(&CollectRequest::default())
    }
}

impl From<&CollectRequest> for ScanOptions {
    fn from(collect: &CollectRequest) -> Self {
        ScanOptions {
            environment: collect.environment,
            open_files: collect.open_files,
            sockets: collect.sockets,
            libraries: collect.libraries,
            paths: true,
            files: collect.files.clone(),
            max_processes: collect.max_processes as usize,
            max_file_bytes: collect.max_file_bytes,
        }
    }
}

/// The findings of one scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub containers: Vec<ContainerReport>,
    /// Processes that exited while being read.
    pub vanished: u32,
    pub scanned_at: Time,
    /// Why the scan stopped early, when it did (its deadline); what it had read is reported.
    pub cut_short: Option<String>,
    /// Processes not read at all because the scan stopped early.
    pub not_read: u32,
    /// Processes whose `stat` could not be read or parsed: in no container.
    pub unreadable: u32,
    /// The last pid allocated in the proc root's PID namespace, when readable.
    pub pids: Option<PidCursor>,
}

/// When a scan stops reading: checked between reads, so one slow file or process costs at
/// most one read beyond it.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    fn passed(self) -> bool {
        Instant::now() >= self.at
    }

    /// Why something was not read.
    fn reason(self) -> String {
        format!(
            "the scan reached its deadline of {:.1}s",
            self.budget.as_secs_f64()
        )
    }
}

const STAT_LIMIT: usize = 4096;

/// Scans one proc root, keeping the previous scan's CPU times to compute CPU millicores.
#[derive(Debug)]
pub struct Scanner {
    root: ProcRoot,
    units: Units,
    /// Whether "permission denied" means the agent lacks CAP_SYS_PTRACE.
    lacks_ptrace: bool,
    previous: Option<CpuSample>,
}

/// The process exited while its details were read.
#[derive(Debug, PartialEq, Eq)]
struct Vanished;

impl Scanner {
    /// Opens a proc root, failing clearly when it is not one.
    pub fn new(proc_root: impl Into<PathBuf>) -> Result<Self, ProcRootError> {
        let root = ProcRoot::open(proc_root)?;
        let boot_time = stat::parse_boot_time(&root.read_root_file("stat")?).map_err(|source| {
            ProcRootError::Parse {
                path: root.path().join("stat"),
                source,
            }
        })?;
        let own_capabilities = root
            .read_root_file("self/status")
            .ok()
            .and_then(|text| status::parse_pid_status(&text).effective_capabilities);
        let lacks_ptrace =
            own_capabilities.is_some_and(|caps| caps & (1 << status::CAP_SYS_PTRACE_BIT) == 0);
        Ok(Scanner {
            root,
            units: Units {
                boot_time,
                ticks_per_second: procfs_read::clock_ticks_per_second(),
                page_size: procfs_read::page_size(),
            },
            lacks_ptrace,
            previous: None,
        })
    }

    /// Records every process's CPU time so the next scan can report CPU millicores, without
    /// reading anything else.
    pub fn sample_cpu(&mut self) -> Result<(), ProcRootError> {
        let mut buffer = Vec::with_capacity(STAT_LIMIT);
        let mut sample = CpuSample::now();
        for pid in self.root.pids()? {
            if let Ok(Some(stat)) = self.read_stat(pid, &mut buffer) {
                sample.record(&stat);
            }
        }
        self.previous = Some(sample);
        Ok(())
    }

    /// One scan. `pod` is the pod's container statuses when running in a pod (names the groups
    /// and leaves the agent's own container out), `None` on a plain host.
    pub fn scan(
        &mut self,
        options: &ScanOptions,
        pod: Option<&[ContainerIdentity]>,
    ) -> Result<Scan, ProcRootError> {
        self.scan_until(options, pod, None)
    }

    /// One scan that stops reading once `budget` has passed and reports what it has read,
    /// each container it could not finish marked truncated with the reason.
    pub fn scan_within(
        &mut self,
        options: &ScanOptions,
        pod: Option<&[ContainerIdentity]>,
        budget: Duration,
    ) -> Result<Scan, ProcRootError> {
        let deadline = Deadline {
            at: Instant::now() + budget,
            budget,
        };
        self.scan_until(options, pod, Some(deadline))
    }

    fn scan_until(
        &mut self,
        options: &ScanOptions,
        pod: Option<&[ContainerIdentity]>,
        deadline: Option<Deadline>,
    ) -> Result<Scan, ProcRootError> {
        let scanned_at = Time(Timestamp::now());
        let pid_cursor = pids::cursor(&self.root);
        let mut vanished = 0u32;
        let first_pass = self.read_candidates(options, &mut vanished, deadline)?;
        let (mut candidates, not_read, unreadable) = (
            first_pass.candidates,
            first_pass.not_read,
            first_pass.unreadable,
        );
        let groups = attribution::attribute(&candidates, pod, self.root.self_pid());

        let mut context = ScanContext::new(self, options);
        context.deadline = deadline;
        let mut reports: Vec<GroupReport> = groups
            .into_iter()
            .map(|group| context.report_group(group, &mut candidates, &mut vanished))
            .collect();
        if options.sockets {
            context.attach_listeners(&mut reports, &candidates);
        }
        let cut_short = deadline
            .filter(|deadline| deadline.passed())
            .map(|deadline| {
                let reason = deadline.reason();
                for report in &mut reports {
                    if not_read > 0 {
                        report.notes.add_line(format!(
                            "{not_read} processes of the machine not read: {reason}"
                        ));
                    }
                    report.report.truncated |= not_read > 0;
                }
                reason
            });
        Ok(Scan {
            containers: reports.into_iter().map(GroupReport::finish).collect(),
            vanished,
            scanned_at,
            cut_short,
            not_read,
            unreadable,
            pids: pid_cursor,
        })
    }

    /// `Ok(None)` when the agent may not read the process's stat or cannot parse it.
    fn read_stat(&self, pid: i32, buffer: &mut Vec<u8>) -> Result<Option<stat::PidStat>, Vanished> {
        match self.root.read_record(pid, "stat", buffer, STAT_LIMIT) {
            Ok(text) => Ok(stat::parse_pid_stat(text).ok()),
            Err(ReadFailure::Gone) => Err(Vanished),
            Err(_) => Ok(None),
        }
    }

    /// Why a file could not be read, as an `unreadable` line says it.
    fn reason(&self, failure: &ReadFailure) -> String {
        notes::reason(failure, self.lacks_ptrace)
    }
}

#[cfg(test)]
mod test_proc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_operator_collect_settings() {
        let collect = CollectRequest {
            environment: EnvironmentPolicy::Redacted,
            open_files: false,
            sockets: true,
            libraries: true,
            files: vec!["/etc/os-release".into()],
            max_processes: 20,
            max_file_bytes: 1024,
        };
        let options = ScanOptions::from(&collect);
        assert_eq!(
            options,
            ScanOptions {
                environment: EnvironmentPolicy::Redacted,
                open_files: false,
                sockets: true,
                libraries: true,
                paths: true,
                files: vec!["/etc/os-release".into()],
                max_processes: 20,
                max_file_bytes: 1024,
            }
        );
    }

    #[test]
    fn a_scan_past_its_deadline_counts_what_it_did_not_read() {
        let proc = test_proc::TestProc::new();
        proc.process(7, "sh");
        proc.process(8, "sh");
        let scan = proc
            .scanner()
            .scan_within(&ScanOptions::default(), None, Duration::ZERO)
            .unwrap();
        assert_eq!(
            scan.cut_short.as_deref(),
            Some("the scan reached its deadline of 0.0s")
        );
        assert_eq!(scan.not_read, 2);
        assert!(scan.containers.is_empty());
    }

    #[test]
    fn a_group_past_the_deadline_lists_what_it_read_and_says_what_it_left_out() {
        let proc = test_proc::TestProc::new();
        proc.process(7, "sh");
        proc.process(8, "sh");
        let (scanner, mut candidates) = proc.first_pass();
        let options = ScanOptions {
            files: vec!["/etc/os-release".into()],
            libraries: true,
            ..ScanOptions::default()
        };
        let mut context = ScanContext::new(&scanner, &options);
        context.deadline = Some(Deadline {
            at: Instant::now(),
            budget: Duration::from_secs(5),
        });
        let group = attribution::Group {
            name: "app".into(),
            container_id: None,
            members: vec![0, 1],
        };
        let mut vanished = 0;
        let report = context
            .report_group(group, &mut candidates, &mut vanished)
            .finish();
        assert_eq!(report.process_count, 2);
        assert!(report.processes.is_empty());
        assert!(report.truncated);
        assert_eq!(
            report.unreadable,
            [
                "details of the less busy processes not read: the scan reached its deadline of 5.0s",
                "files not read: the scan reached its deadline of 5.0s",
                "libraries not read: the scan reached its deadline of 5.0s",
            ]
        );
    }

    #[test]
    fn a_directory_without_btime_is_no_proc_root() {
        let proc = test_proc::TestProc::new();
        std::fs::write(proc.root().join("stat"), "cpu 1\n").unwrap();
        let error = Scanner::new(proc.root()).unwrap_err();
        assert!(matches!(error, ProcRootError::Parse { .. }), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
