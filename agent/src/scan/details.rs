//! The facts of one listed process that its own files give: status, command line, descriptors,
//! environment, exe and cwd, with what could not be read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use procwatch_crds::{EnvironmentPolicy, ProcessInfo};

use crate::parse::stat::PidStat;
use crate::parse::status::{self, PidStatus};
use crate::parse::{cmdline, environ, fd};
use crate::procfs_read::ReadFailure;

use super::notes;
use super::{ScanOptions, Scanner, Vanished};

const STATUS_LIMIT: usize = 16 * 1024;
const ENVIRON_LIMIT: usize = 64 * 1024;

/// What turns /proc's ticks and pages into times and bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Units {
    /// Seconds since the epoch.
    pub(super) boot_time: u64,
    pub(super) ticks_per_second: u64,
    pub(super) page_size: u64,
}

/// One listed process's facts, with what could not be read. Its user name and CPU use are
/// added when its container is known.
pub(super) struct ProcessDetails {
    pub(super) process: ProcessInfo,
    /// `unreadable` lines for its container: what, and why.
    pub(super) notes: Vec<(&'static str, String)>,
    /// Inodes of the sockets it holds (when listening sockets are collected).
    pub(super) sockets: Vec<u64>,
    /// Its network namespace (when listening sockets are collected and it is readable).
    pub(super) net_namespace: Option<u64>,
    /// Part of its environment was left out.
    pub(super) truncated: bool,
}

/// The facts that `stat`, `status` and `cmdline` give. The exact RSS of `status` is preferred
/// to the per-CPU approximation of `stat`.
fn process_info(stat: &PidStat, status: &PidStatus, args: String, units: Units) -> ProcessInfo {
    let ticks = units.ticks_per_second;
    ProcessInfo {
        pid: stat.pid,
        ppid: stat.ppid,
        uid: status.effective_uid.unwrap_or_default(),
        command: stat.comm.clone(),
        args,
        state: stat.state,
        threads: stat.threads,
        cpu_time_millis: stat.cpu_ticks() * 1000 / ticks,
        memory_bytes: status.rss_bytes.unwrap_or(stat.rss_pages * units.page_size),
        started_at: Timestamp::from_millisecond(
            (units.boot_time * 1000 + stat.start_ticks * 1000 / ticks) as i64,
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
    }
}

impl Scanner {
    /// Every fact of one process that its own files give. Fails only when the process is gone.
    pub(super) fn process_details(
        &self,
        stat: &PidStat,
        options: &ScanOptions,
        buffer: &mut Vec<u8>,
    ) -> Result<ProcessDetails, Vanished> {
        let root = &self.root;
        let pid = stat.pid;
        let mut notes = Vec::new();

        let status = match root.read_record(pid, "status", buffer, STATUS_LIMIT) {
            Ok(text) => {
                if text.len() >= STATUS_LIMIT {
                    notes.push(("status", notes::read_limit_reason(STATUS_LIMIT)));
                }
                status::parse_pid_status(text)
            }
            Err(ReadFailure::Gone) => return Err(Vanished),
            Err(failure) => {
                notes.push(("status", self.reason(&failure)));
                PidStatus::default()
            }
        };
        let args = match root.read_record(pid, "cmdline", buffer, cmdline::MAX_ARGS_BYTES + 1) {
            Ok(text) => {
                if text.len() > cmdline::MAX_ARGS_BYTES {
                    notes.push(("cmdline", notes::read_limit_reason(cmdline::MAX_ARGS_BYTES)));
                }
                cmdline::parse_cmdline(text)
            }
            Err(ReadFailure::Gone) => return Err(Vanished),
            Err(failure) => {
                notes.push(("cmdline", self.reason(&failure)));
                String::new()
            }
        };
        if status.effective_uid.is_none() {
            notes.push(("uid", "no Uid line in status".to_string()));
        }
        let mut details = ProcessDetails {
            process: process_info(stat, &status, args, self.units),
            notes,
            sockets: Vec::new(),
            net_namespace: None,
            truncated: false,
        };

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
                Ok(mut text) => {
                    if text.len() >= ENVIRON_LIMIT {
                        details.truncated = true;
                        details
                            .notes
                            .push(("environ", notes::read_limit_reason(ENVIRON_LIMIT)));
                        // The last variable may be cut anywhere: only whole ones count.
                        let whole = text.iter().rposition(|&b| b == 0).map_or(0, |end| end + 1);
                        text = &text[..whole];
                    }
                    let environment = environ::parse_environ(text, options.environment);
                    if environment.left_out > 0 {
                        details.truncated = true;
                        details.notes.push((
                            "environ",
                            format!(
                                "{} more variables not listed (at most {} per process)",
                                environment.left_out,
                                environ::MAX_VARIABLES
                            ),
                        ));
                    }
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
}

#[cfg(test)]
mod tests {
    use procwatch_crds::{ProcessState, SeccompMode};

    use super::super::test_proc::TestProc;
    use super::*;
    use crate::parse::stat::parse_pid_stat;

    const UNITS: Units = Units {
        boot_time: 1_732_838_400,
        ticks_per_second: 100,
        page_size: 4096,
    };

    fn nginx_stat() -> PidStat {
        parse_pid_stat(b"7 (nginx) S 1 7 7 0 -1 0 0 0 0 0 25 15 0 0 20 0 2 0 5230 0 1922 0\n")
            .unwrap()
    }

    #[test]
    fn stat_and_status_make_the_process_facts() {
        let status = PidStatus {
            effective_uid: Some(101),
            rss_bytes: Some(7688 * 1024),
            effective_capabilities: Some(1 << 10),
            no_new_privs: Some(true),
            seccomp: Some(SeccompMode::Filter),
        };
        let info = process_info(&nginx_stat(), &status, "nginx -g x".into(), UNITS);
        assert_eq!((info.pid, info.ppid, info.uid), (7, 1, 101));
        assert_eq!(
            (info.command.as_str(), info.args.as_str()),
            ("nginx", "nginx -g x")
        );
        assert_eq!((info.state, info.threads), (ProcessState::Sleeping, 2));
        assert_eq!(info.cpu_time_millis, 400, "40 ticks at 100 Hz");
        assert_eq!(info.memory_bytes, 7688 * 1024, "status's exact RSS");
        assert_eq!(
            info.started_at.unwrap().0.as_millisecond(),
            1_732_838_400_000 + 52_300
        );
        assert_eq!(info.capabilities, ["NET_BIND_SERVICE"]);
        assert_eq!(info.seccomp, Some(SeccompMode::Filter));
        assert!(info.no_new_privs);
    }

    #[test]
    fn without_status_the_rss_of_stat_counts() {
        let info = process_info(&nginx_stat(), &PidStatus::default(), String::new(), UNITS);
        assert_eq!(info.memory_bytes, 1922 * 4096);
        assert_eq!(info.uid, 0);
        assert!(info.capabilities.is_empty() && !info.no_new_privs);
    }

    fn everything() -> ScanOptions {
        ScanOptions {
            environment: EnvironmentPolicy::Names,
            open_files: true,
            sockets: true,
            paths: true,
            ..ScanOptions::default()
        }
    }

    #[test]
    fn a_megabyte_command_line_and_environment_are_cut_and_noted() {
        let proc = TestProc::new();
        proc.process(7, "app");
        proc.file(7, "cmdline", "a".repeat(1 << 20));
        proc.file(7, "environ", "VAR=x\0".repeat((1 << 20) / 6));
        proc.file(
            7,
            "status",
            format!("Uid:\t0\t0\t0\t0\n{}", "X:\t1\n".repeat(1 << 14)),
        );
        let scanner = proc.scanner();
        let stat = parse_pid_stat(&std::fs::read(proc.path(7, "stat")).unwrap()).unwrap();
        let details = scanner
            .process_details(&stat, &everything(), &mut Vec::new())
            .unwrap();
        assert!(details.process.args.len() <= cmdline::MAX_ARGS_BYTES + 3);
        assert!(details.truncated);
        assert_eq!(
            details.notes,
            [
                (
                    "status",
                    "reached the read limit of 16 KiB: the rest not read".to_string()
                ),
                (
                    "cmdline",
                    "reached the read limit of 4 KiB: the rest not read".to_string()
                ),
                (
                    "environ",
                    "reached the read limit of 64 KiB: the rest not read".to_string()
                ),
                (
                    "environ",
                    // 65536 bytes hold 10922 whole `VAR=x`.
                    "10794 more variables not listed (at most 128 per process)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn descriptors_environment_and_paths_from_the_process_files() {
        let proc = TestProc::new();
        proc.process(7, "nginx");
        proc.file(7, "cmdline", "nginx\0-g\0daemon off;\0");
        proc.file(7, "environ", "PATH=/bin\0SECRET=x\0");
        for (fd, target) in ["socket:[31337]", "/dev/null", "pipe:[5]"]
            .iter()
            .enumerate()
        {
            proc.link(7, &format!("fd/{fd}"), target);
        }
        proc.link(7, "exe", "/usr/sbin/nginx");
        proc.link(7, "ns/net", "net:[4026531992]");
        let scanner = proc.scanner();
        let stat = parse_pid_stat(&std::fs::read(proc.path(7, "stat")).unwrap()).unwrap();
        let details = scanner
            .process_details(&stat, &everything(), &mut Vec::new())
            .unwrap();
        let process = &details.process;
        assert_eq!(process.args, "nginx -g daemon off;");
        assert_eq!(process.environment, ["PATH", "SECRET"]);
        assert_eq!(process.open_files, Some(3));
        assert_eq!(
            process.open_file_kinds.keys().collect::<Vec<_>>(),
            ["device", "pipe", "socket"]
        );
        assert_eq!(process.exe.as_deref(), Some("/usr/sbin/nginx"));
        assert_eq!(details.sockets, [31337]);
        assert_eq!(details.net_namespace, Some(4026531992));
        // A live process without cwd (a kernel thread's) simply has none.
        assert_eq!(process.cwd, None);
        assert!(details.notes.is_empty(), "{:?}", details.notes);
    }

    #[test]
    fn a_process_gone_before_its_status_vanished() {
        let proc = TestProc::new();
        proc.process(7, "sh");
        let scanner = proc.scanner();
        let stat = parse_pid_stat(&std::fs::read(proc.path(7, "stat")).unwrap()).unwrap();
        std::fs::remove_dir_all(proc.path(7, "")).unwrap();
        let details = scanner.process_details(&stat, &everything(), &mut Vec::new());
        assert_eq!(details.err(), Some(Vanished));
    }

    #[test]
    fn a_status_without_uid_is_noted() {
        let proc = TestProc::new();
        proc.process(7, "sh");
        proc.file(7, "status", "Name:\tsh\n");
        let scanner = proc.scanner();
        let stat = parse_pid_stat(&std::fs::read(proc.path(7, "stat")).unwrap()).unwrap();
        let options = ScanOptions {
            environment: EnvironmentPolicy::None,
            open_files: false,
            sockets: false,
            paths: false,
            ..ScanOptions::default()
        };
        let details = scanner
            .process_details(&stat, &options, &mut Vec::new())
            .unwrap();
        assert_eq!(
            details.notes,
            [("uid", "no Uid line in status".to_string())]
        );
    }
}
