//! The scanner: one pass over a proc root turned into per-container findings.
//!
//! A scan reads `stat` and the mount namespace of every process, and `cgroup` of only a few per
//! mount namespace (enough to attribute and rank them all), then reads the details (status,
//! command line, descriptors, environment, exe, cwd, user) only of the processes it will list:
//! the busiest `max_processes` of each container. When that is every process, the details are
//! read in the same pass, so each process's /proc directory is opened once. A process that
//! exits meanwhile is skipped and counted; a file the agent may not read becomes a line in the
//! container's `unreadable`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use procwatch_crds::report::{CollectRequest, ContainerIdentity};
use procwatch_crds::{
    ContainerReport, EnvironmentPolicy, FileFingerprint, ListeningSocket, ProcessInfo,
    SocketProtocol,
};

use crate::attribution::{self, Group, ProcessIdentity};
use crate::fingerprint::{FingerprintError, fingerprint};
use crate::parse::{cmdline, environ, fd, maps, net, passwd, stat, status};
use crate::procfs_read::{self, ProcRoot, ProcRootError, ReadFailure};

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
}

/// At most this many libraries per container.
pub const MAX_LIBRARIES: usize = 256;
/// At most this many pids are named in one `unreadable` line.
const MAX_PIDS_PER_NOTE: usize = 8;
const STAT_LIMIT: usize = 4096;
const STATUS_LIMIT: usize = 16 * 1024;
const ENVIRON_LIMIT: usize = 64 * 1024;
const MAPS_LIMIT: usize = 4 * 1024 * 1024;
const NET_TABLE_LIMIT: usize = 16 * 1024 * 1024;
const CGROUP_LIMIT: usize = 64 * 1024;
/// Cgroup files read per mount namespace, in pid order, when none names a container (the
/// host's namespace): a process started into a container's namespace from outside it keeps
/// an outside cgroup, and the container's own processes come after it only when pids wrap.
const UNNAMED_CGROUPS_PER_NAMESPACE: u32 = 3;

/// Scans one proc root, keeping the previous scan's CPU times to compute CPU millicores.
#[derive(Debug)]
pub struct Scanner {
    root: ProcRoot,
    boot_time: u64,
    ticks_per_second: u64,
    page_size: u64,
    /// Whether "permission denied" means the agent lacks CAP_SYS_PTRACE.
    lacks_ptrace: bool,
    previous: Option<CpuSample>,
}

#[derive(Debug)]
struct CpuSample {
    at: Instant,
    /// (pid, start ticks) → CPU ticks used so far; the start time tells a reused pid apart.
    ticks: HashMap<(i32, u64), u64>,
}

impl CpuSample {
    fn new(at: Instant) -> Self {
        CpuSample {
            at,
            ticks: HashMap::new(),
        }
    }

    fn record(&mut self, stat: &stat::PidStat) {
        self.ticks
            .insert((stat.pid, stat.start_ticks), stat.cpu_ticks());
    }

    /// CPU ticks the process used since this sample; `None` when it was not in it.
    fn used_since(&self, stat: &stat::PidStat) -> Option<u64> {
        let before = self.ticks.get(&(stat.pid, stat.start_ticks))?;
        Some(stat.cpu_ticks().saturating_sub(*before))
    }
}

/// The cheap facts of every process, read in the first pass.
struct Candidate {
    stat: stat::PidStat,
    identity: ProcessIdentity,
    cpu_millicores: u64,
    /// Read in the first pass too when every process will be listed (boxed: most candidates
    /// have none).
    details: Option<Box<ProcessDetails>>,
}

impl AsRef<ProcessIdentity> for Candidate {
    fn as_ref(&self) -> &ProcessIdentity {
        &self.identity
    }
}

/// The facts of one listed process that its own files give, with what could not be read. Its
/// user name and CPU use are added when its container is known.
struct ProcessDetails {
    process: ProcessInfo,
    /// `unreadable` lines for its container: what, and why.
    notes: Vec<(&'static str, String)>,
    /// Inodes of the sockets it holds (when listening sockets are collected).
    sockets: Vec<u64>,
    /// Its network namespace (when listening sockets are collected and it is readable).
    net_namespace: Option<u64>,
    /// Part of its environment was left out.
    truncated: bool,
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
}

/// The process exited while its details were read.
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
            boot_time,
            ticks_per_second: procfs_read::clock_ticks_per_second(),
            page_size: procfs_read::page_size(),
            lacks_ptrace,
            previous: None,
        })
    }

    /// Records every process's CPU time so the next scan can report CPU millicores, without
    /// reading anything else.
    pub fn sample_cpu(&mut self) -> Result<(), ProcRootError> {
        let mut buffer = Vec::with_capacity(STAT_LIMIT);
        let mut sample = CpuSample::new(Instant::now());
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
        let scanned_at = Time(Timestamp::now());
        let mut vanished = 0u32;
        let mut candidates = self.read_candidates(options, &mut vanished)?;
        let groups = attribution::attribute(&candidates, pod, self.root.self_pid());

        let mut context = ScanContext {
            scanner: self,
            options,
            buffer: Vec::with_capacity(8192),
            users: HashMap::new(),
            socket_owners: HashMap::new(),
        };
        let mut reports: Vec<GroupReport> = groups
            .into_iter()
            .map(|group| context.report_group(group, &mut candidates, &mut vanished))
            .collect();
        if options.sockets {
            context.attach_listeners(&mut reports, &candidates);
        }
        Ok(Scan {
            containers: reports.into_iter().map(GroupReport::finish).collect(),
            vanished,
            scanned_at,
        })
    }

    /// First pass: stat and mount namespace of every process, cgroup where it tells something
    /// new, and the details too when every process will be listed; records the CPU sample.
    fn read_candidates(
        &mut self,
        options: &ScanOptions,
        vanished: &mut u32,
    ) -> Result<Vec<Candidate>, ProcRootError> {
        let mut sample = CpuSample::new(Instant::now());
        let mut buffer = Vec::with_capacity(4096);
        let pids = self.root.pids()?;
        let mut candidates = Vec::with_capacity(pids.len());
        let mut namespaces = HashMap::new();
        let details = (options.max_processes >= pids.len()).then_some(options);
        for pid in pids {
            match self.read_candidate(pid, &mut buffer, &mut namespaces, details) {
                Ok(Some(candidate)) => {
                    sample.record(&candidate.stat);
                    candidates.push(candidate);
                }
                Ok(None) => {}
                Err(Vanished) => *vanished += 1,
            }
        }
        if let Some(previous) = &self.previous {
            let elapsed_ms = sample.at.duration_since(previous.at).as_millis() as u64;
            for candidate in &mut candidates {
                if let Some(used) = previous.used_since(&candidate.stat) {
                    let used_ms = used * 1000 / self.ticks_per_second;
                    candidate.cpu_millicores =
                        (used_ms * 1000).checked_div(elapsed_ms).unwrap_or(0);
                }
            }
        }
        self.previous = Some(sample);
        Ok(candidates)
    }

    /// `Ok(None)` when the agent may not read the process's stat or cannot parse it.
    fn read_stat(&self, pid: i32, buffer: &mut Vec<u8>) -> Result<Option<stat::PidStat>, Vanished> {
        match self.root.read_record(pid, "stat", buffer, STAT_LIMIT) {
            Ok(text) => Ok(stat::parse_pid_stat(text).ok()),
            Err(ReadFailure::Gone) => Err(Vanished),
            Err(_) => Ok(None),
        }
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
                match container {
                    Some(_) => namespace.named = true,
                    None => namespace.unnamed += 1,
                }
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

    /// Every fact of one process that its own files give. Fails only when the process is gone.
    fn process_details(
        &self,
        stat: &stat::PidStat,
        options: &ScanOptions,
        buffer: &mut Vec<u8>,
    ) -> Result<ProcessDetails, Vanished> {
        let root = &self.root;
        let pid = stat.pid;
        let mut details = ProcessDetails {
            process: ProcessInfo::default(),
            notes: Vec::new(),
            sockets: Vec::new(),
            net_namespace: None,
            truncated: false,
        };

        let status = match root.read_record(pid, "status", buffer, STATUS_LIMIT) {
            Ok(text) => status::parse_pid_status(text),
            Err(ReadFailure::Gone) => return Err(Vanished),
            Err(failure) => {
                details.notes.push(("status", self.reason(&failure)));
                status::PidStatus::default()
            }
        };
        let args = match root.read_record(pid, "cmdline", buffer, cmdline::MAX_ARGS_BYTES + 1) {
            Ok(text) => cmdline::parse_cmdline(text),
            Err(ReadFailure::Gone) => return Err(Vanished),
            Err(failure) => {
                details.notes.push(("cmdline", self.reason(&failure)));
                String::new()
            }
        };
        let ticks = self.ticks_per_second;
        details.process = ProcessInfo {
            pid,
            ppid: stat.ppid,
            uid: status.effective_uid.unwrap_or_default(),
            command: stat.comm.clone(),
            args,
            state: stat.state,
            threads: stat.threads,
            cpu_time_millis: stat.cpu_ticks() * 1000 / ticks,
            memory_bytes: status.rss_bytes.unwrap_or(stat.rss_pages * self.page_size),
            started_at: Timestamp::from_millisecond(
                (self.boot_time * 1000 + stat.start_ticks * 1000 / ticks) as i64,
            )
            .ok()
            .map(Time),
            capabilities: status
                .effective_capabilities
                .map(status::capability_names)
                .unwrap_or_default(),
            seccomp: status.seccomp,
            no_new_privs: status.no_new_privs.unwrap_or(false),
            ..ProcessInfo::default()
        };
        if status.effective_uid.is_none() {
            details
                .notes
                .push(("uid", "no Uid line in status".to_string()));
        }

        if options.open_files || options.sockets {
            // Counted by kind, named once at the end: no String per descriptor.
            let mut kinds: BTreeMap<fd::FdKind, u32> = BTreeMap::new();
            let sockets = &mut details.sockets;
            let listed = root.for_each_fd_target(pid, |target| {
                let kind = fd::classify_fd_target(target);
                *kinds.entry(kind).or_default() += 1;
                if options.sockets
                    && let Some(inode) = fd::socket_inode(target)
                {
                    sockets.push(inode);
                }
            });
            match listed {
                Ok(()) if options.open_files => {
                    details.process.open_files = Some(kinds.values().sum());
                    details.process.open_file_kinds = kinds
                        .into_iter()
                        .map(|(kind, count)| (kind.name().to_string(), count))
                        .collect();
                }
                Ok(()) => {}
                Err(failure) => {
                    self.optional_read_failed(pid, "open files", failure, &mut details.notes)?
                }
            }
        }

        if options.environment != EnvironmentPolicy::None {
            match root.read_record(pid, "environ", buffer, ENVIRON_LIMIT) {
                Ok(text) => {
                    let environment = environ::parse_environ(text, options.environment);
                    details.truncated |= environment.truncated;
                    details.process.environment = environment.entries;
                }
                Err(failure) => {
                    self.optional_read_failed(pid, "environ", failure, &mut details.notes)?
                }
            }
        }

        if options.paths {
            let process = &mut details.process;
            for (name, field) in [("exe", &mut process.exe), ("cwd", &mut process.cwd)] {
                match root.read_link(pid, name) {
                    Ok(target) => *field = Some(target.to_string_lossy().into_owned()),
                    Err(failure) => {
                        self.optional_read_failed(pid, name, failure, &mut details.notes)?
                    }
                }
            }
        }

        if options.sockets {
            details.net_namespace = root.namespace_inode(pid, "ns/net").ok();
        }
        Ok(details)
    }

    /// A file that a live process may lack failed to read: the process is gone, or it simply
    /// has none (a zombie has no descriptors, a kernel thread no exe or cwd), or the failure is
    /// noted for its container.
    fn optional_read_failed(
        &self,
        pid: i32,
        what: &'static str,
        failure: ReadFailure,
        notes: &mut Vec<(&'static str, String)>,
    ) -> Result<(), Vanished> {
        match failure {
            ReadFailure::Gone if !self.root.is_alive(pid) => Err(Vanished),
            ReadFailure::Gone => Ok(()),
            failure => {
                notes.push((what, self.reason(&failure)));
                Ok(())
            }
        }
    }

    fn denied_reason(&self) -> &'static str {
        if self.lacks_ptrace {
            "permission denied (agent has no CAP_SYS_PTRACE)"
        } else {
            "permission denied"
        }
    }

    fn reason(&self, failure: &ReadFailure) -> String {
        match failure {
            ReadFailure::Denied => self.denied_reason().to_string(),
            ReadFailure::Gone => "gone".to_string(),
            ReadFailure::Other(error) => error.to_string(),
        }
    }
}

/// A container's report being built, with what socket attribution needs.
struct GroupReport {
    report: ContainerReport,
    /// Members in candidate indexes; the first `detailed` of `ranked` have full details.
    ranked: Vec<usize>,
    detailed: usize,
    /// A listed process of each of the group's network namespaces (`None`: unreadable, read
    /// through the group's first such process), to read the socket tables through.
    net_sources: Vec<(i32, Option<u64>)>,
    notes: Notes,
}

impl GroupReport {
    fn finish(mut self) -> ContainerReport {
        self.report.unreadable = self.notes.render();
        self.report
    }
}

/// `unreadable` lines, collected per (what, reason) so one line names many pids.
#[derive(Default)]
struct Notes(BTreeMap<(String, String), Vec<i32>>);

impl Notes {
    fn add(&mut self, what: &str, pid: i32, reason: String) {
        self.0
            .entry((what.to_string(), reason))
            .or_default()
            .push(pid);
    }

    fn add_line(&mut self, line: String) {
        self.0.entry((line, String::new())).or_default();
    }

    fn render(self) -> Vec<String> {
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

struct ScanContext<'a> {
    scanner: &'a Scanner,
    options: &'a ScanOptions,
    buffer: Vec<u8>,
    /// Users of the group being reported, by mount namespace (`None` when not read: one
    /// /etc/passwd for the whole group); `None` when it could not be read.
    users: HashMap<Option<u64>, Option<HashMap<u32, String>>>,
    /// Socket inodes held by the listed processes of every group: inode → lowest pid.
    socket_owners: HashMap<u64, i32>,
}

impl ScanContext<'_> {
    fn report_group(
        &mut self,
        group: Group,
        candidates: &mut [Candidate],
        vanished: &mut u32,
    ) -> GroupReport {
        self.users.clear();
        let mut ranked = group.members;
        ranked.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            (b.cpu_millicores, b.stat.rss_pages, a.stat.pid).cmp(&(
                a.cpu_millicores,
                a.stat.rss_pages,
                b.stat.pid,
            ))
        });
        let mut report = GroupReport {
            report: ContainerReport {
                name: group.name,
                container_id: group.container_id,
                ..ContainerReport::default()
            },
            ranked: Vec::with_capacity(ranked.len()),
            detailed: 0,
            net_sources: Vec::new(),
            notes: Notes::default(),
        };
        let listed = ranked.len().min(self.options.max_processes);
        report.report.processes.reserve_exact(listed);
        let mut detailed = Vec::with_capacity(listed);
        let mut rest = Vec::with_capacity(ranked.len() - listed);
        for index in ranked {
            if detailed.len() == self.options.max_processes {
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
        let page_size = self.scanner.page_size;
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
        if self.options.libraries {
            self.collect_libraries(&mut report, candidates);
        }
        if !self.options.files.is_empty() {
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

    /// The user name from the process's own /etc/passwd, read once per group and mount namespace.
    fn user_name(
        &mut self,
        candidate: &Candidate,
        uid: u32,
        group: &mut GroupReport,
    ) -> Option<String> {
        let namespace = candidate.identity.mount_namespace;
        let pid = candidate.stat.pid;
        if !self.users.contains_key(&namespace) {
            let users = match self.read_in_root(pid, "/etc/passwd") {
                Ok(text) => Some(passwd::parse_passwd(&text)),
                // Distroless images have no /etc/passwd: nothing was withheld.
                Err(ReadFailure::Gone) => None,
                Err(failure) => {
                    group
                        .notes
                        .add("/etc/passwd", pid, self.scanner.reason(&failure));
                    None
                }
            };
            self.users.insert(namespace, users);
        }
        self.users[&namespace].as_ref()?.get(&uid).cloned()
    }

    fn read_in_root(&self, pid: i32, path: &str) -> Result<Vec<u8>, ReadFailure> {
        use std::io::Read;
        let file = self.scanner.root.open_in_root(pid, path)?;
        let mut text = Vec::new();
        file.take(1024 * 1024).read_to_end(&mut text)?;
        Ok(text)
    }

    fn file_reason(&self, failure: &ReadFailure) -> String {
        match failure {
            ReadFailure::Gone => "not found".to_string(),
            failure => self.scanner.reason(failure),
        }
    }

    fn collect_libraries(&mut self, group: &mut GroupReport, candidates: &[Candidate]) {
        let mut libraries = BTreeSet::new();
        for &index in &group.ranked {
            let pid = candidates[index].stat.pid;
            match self
                .scanner
                .root
                .read_whole(pid, "maps", &mut self.buffer, MAPS_LIMIT)
            {
                Ok(text) => maps::collect_executable_mappings(text, &mut libraries),
                Err(ReadFailure::Gone) => {}
                Err(failure) => group.notes.add("maps", pid, self.scanner.reason(&failure)),
            }
        }
        group.report.truncated |= libraries.len() > MAX_LIBRARIES;
        group.report.libraries = libraries.into_iter().take(MAX_LIBRARIES).collect();
    }

    /// Fingerprints the requested files through the root of the first process that lets us.
    fn fingerprint_files(&mut self, group: &mut GroupReport) {
        let pids: Vec<i32> = group.report.processes.iter().map(|p| p.pid).collect();
        for path in &self.options.files {
            let mut last_reason = None;
            let mut printed: Option<FileFingerprint> = None;
            for &pid in &pids {
                match self.scanner.root.open_in_root(pid, path) {
                    Ok(file) => {
                        match fingerprint(path, file) {
                            Ok(print) => printed = Some(print),
                            Err(FingerprintError::NotRegular) => {
                                last_reason = Some("not a regular file".to_string())
                            }
                            Err(FingerprintError::Io(error)) => {
                                last_reason = Some(error.to_string())
                            }
                        }
                        break;
                    }
                    // Another process of the container may still be readable.
                    Err(ReadFailure::Denied) => {
                        last_reason = Some(self.scanner.denied_reason().to_string())
                    }
                    Err(failure) => {
                        last_reason = Some(self.file_reason(&failure));
                        break;
                    }
                }
            }
            match (printed, last_reason) {
                (Some(print), _) => group.report.files.push(print),
                (None, Some(reason)) => group.notes.add_line(format!("file {path}: {reason}")),
                (None, None) => group
                    .notes
                    .add_line(format!("file {path}: no process to read it through")),
            }
        }
    }

    /// Reads the listening sockets of every network namespace the groups live in and gives
    /// each to the group whose process holds it.
    fn attach_listeners(&mut self, groups: &mut [GroupReport], candidates: &[Candidate]) {
        let root = &self.scanner.root;
        let mut listeners: HashMap<u64, ListeningSocket> = HashMap::new();
        let mut tables_read = HashSet::new();
        for group in groups.iter_mut() {
            // The namespaces were read with each process's details.
            for &(pid, namespace) in &group.net_sources {
                if namespace.is_some() && !tables_read.insert(namespace) {
                    continue;
                }
                if let Err(failure) = self.read_socket_tables(pid, &mut listeners) {
                    group
                        .notes
                        .add("sockets", pid, self.scanner.reason(&failure));
                }
            }
        }
        if listeners.is_empty() {
            return;
        }
        let mut owners = std::mem::take(&mut self.socket_owners);
        // Listeners held only by processes beyond max_processes: look at those too, until
        // every listener has its owner.
        let mut unowned: HashSet<u64> = listeners
            .keys()
            .filter(|inode| !owners.contains_key(inode))
            .copied()
            .collect();
        'groups: for group in groups.iter() {
            for &index in &group.ranked[group.detailed..] {
                if unowned.is_empty() {
                    break 'groups;
                }
                let pid = candidates[index].stat.pid;
                let _ = root.for_each_fd_target(pid, |target| {
                    if let Some(inode) = fd::socket_inode(target)
                        && unowned.remove(&inode)
                    {
                        owners.insert(inode, pid);
                    }
                });
            }
        }
        let group_of_pid: HashMap<i32, usize> = groups
            .iter()
            .enumerate()
            .flat_map(|(group, report)| {
                report
                    .ranked
                    .iter()
                    .map(move |&index| (candidates[index].stat.pid, group))
            })
            .collect();
        for (inode, mut listener) in listeners {
            let Some(&pid) = owners.get(&inode) else {
                continue;
            };
            let Some(&group) = group_of_pid.get(&pid) else {
                continue;
            };
            listener.pid = Some(pid);
            if let Some(path) = listener
                .path
                .as_deref()
                .filter(|path| path.starts_with('/'))
            {
                listener.reachable_at = Some(root.path_in_root(pid, path));
            }
            groups[group].report.listening.push(listener);
        }
        for group in groups {
            group.report.listening.sort();
        }
    }

    fn read_socket_tables(
        &mut self,
        pid: i32,
        listeners: &mut HashMap<u64, ListeningSocket>,
    ) -> Result<(), ReadFailure> {
        let root = &self.scanner.root;
        for (table, protocol) in [
            ("net/tcp", SocketProtocol::Tcp),
            ("net/tcp6", SocketProtocol::Tcp),
            ("net/udp", SocketProtocol::Udp),
            ("net/udp6", SocketProtocol::Udp),
            ("net/unix", SocketProtocol::Unix),
        ] {
            let text = match root.read_whole(pid, table, &mut self.buffer, NET_TABLE_LIMIT) {
                Ok(text) => text,
                // A table the kernel does not have (tcp6 without IPv6) lists nothing.
                Err(ReadFailure::Gone) if root.is_alive(pid) => continue,
                Err(failure) => return Err(failure),
            };
            let socket = |address, path| ListeningSocket {
                protocol,
                address,
                path,
                reachable_at: None,
                pid: None,
            };
            if protocol == SocketProtocol::Unix {
                for listener in net::parse_unix_listeners(text) {
                    listeners.insert(listener.inode, socket(None, Some(listener.path)));
                }
            } else {
                for listener in net::parse_inet_listeners(text, protocol) {
                    let address = listener.address.to_string();
                    listeners.insert(listener.inode, socket(Some(address), None));
                }
            }
        }
        Ok(())
    }
}
