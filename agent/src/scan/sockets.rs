//! Listening sockets: the socket tables of every network namespace the groups live in, each
//! listener given to the group whose process holds its inode (the lowest such pid).

use std::collections::{HashMap, HashSet};

use procwatch_crds::{ListeningSocket, SocketProtocol};

use crate::parse::{ParseError, fd, net};
use crate::procfs_read::ReadFailure;

use super::candidates::Candidate;
use super::group::{GroupReport, ScanContext};
use super::notes;

const NET_TABLE_LIMIT: usize = 16 * 1024 * 1024;
/// At most this many listening sockets per container.
pub const MAX_LISTENERS: usize = 256;

/// Why the socket tables of a network namespace could not be read.
enum TableFailure {
    Read(ReadFailure),
    Malformed(ParseError),
}

impl ScanContext<'_> {
    /// Reads the listening sockets of every network namespace the groups live in and gives
    /// each to the group whose process holds it.
    pub(super) fn attach_listeners(
        &mut self,
        groups: &mut [GroupReport],
        candidates: &[Candidate],
    ) {
        let root = &self.scanner.root;
        let mut listeners: HashMap<u64, ListeningSocket> = HashMap::new();
        let mut tables_read = HashSet::new();
        for group in groups.iter_mut() {
            // The namespaces were read with each process's details.
            let sources = std::mem::take(&mut group.net_sources);
            for &(pid, namespace) in &sources {
                if namespace.is_some() && !tables_read.insert(namespace) {
                    continue;
                }
                if self.out_of_time(group, "listening sockets") {
                    break;
                }
                let reason = match self.read_socket_tables(pid, &mut listeners) {
                    Ok(false) => continue,
                    Ok(true) => {
                        group.report.truncated = true;
                        notes::read_limit_reason(NET_TABLE_LIMIT)
                    }
                    Err(TableFailure::Read(failure)) => self.scanner.reason(&failure),
                    Err(TableFailure::Malformed(error)) => error.to_string(),
                };
                group.notes.add("sockets", pid, reason);
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
            let listening = &mut group.report.listening;
            listening.sort();
            if listening.len() > MAX_LISTENERS {
                group.notes.add_line(notes::left_out(
                    "listening sockets",
                    listening.len() - MAX_LISTENERS,
                    MAX_LISTENERS,
                ));
                listening.truncate(MAX_LISTENERS);
                group.report.truncated = true;
            }
        }
    }

    /// Adds the listeners of the network namespace of `pid` to `listeners`, by inode; returns
    /// whether a table reached its read limit (the listeners past it are not known).
    fn read_socket_tables(
        &mut self,
        pid: i32,
        listeners: &mut HashMap<u64, ListeningSocket>,
    ) -> Result<bool, TableFailure> {
        let root = &self.scanner.root;
        let mut cut = false;
        for (table, protocol) in [
            ("net/tcp", SocketProtocol::Tcp),
            ("net/tcp6", SocketProtocol::Tcp),
            ("net/udp", SocketProtocol::Udp),
            ("net/udp6", SocketProtocol::Udp),
            ("net/unix", SocketProtocol::Unix),
        ] {
            let text = match root.read_whole(pid, table, &mut self.buffer, NET_TABLE_LIMIT) {
                Ok(text) if text.len() >= NET_TABLE_LIMIT => {
                    cut = true;
                    notes::whole_lines(text)
                }
                Ok(text) => text,
                // A table the kernel does not have (tcp6 without IPv6) lists nothing.
                Err(ReadFailure::Gone) if root.is_alive(pid) => continue,
                Err(failure) => return Err(TableFailure::Read(failure)),
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
                let table =
                    net::parse_inet_listeners(text, protocol).map_err(TableFailure::Malformed)?;
                for listener in table {
                    let address = listener.address.to_string();
                    listeners.insert(listener.inode, socket(Some(address), None));
                }
            }
        }
        Ok(cut)
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::super::ScanOptions;
    use super::super::test_proc::TestProc;
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
";
    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20001 /run/app.sock
";

    /// Groups of one process each (pids 7 and 8) in one network namespace, read through 7; 8 is
    /// listed, holding the unix socket, when `eight_listed`.
    fn attach(proc: &TestProc, eight_listed: bool) -> Vec<GroupReport> {
        let (scanner, candidates) = proc.first_pass();
        let options = ScanOptions::default();
        let mut context = ScanContext::new(&scanner, &options);
        let mut groups: Vec<GroupReport> = (0..candidates.len())
            .map(|index| {
                let mut group = GroupReport::for_test();
                group.ranked = vec![index];
                group
            })
            .collect();
        // As listing the first process (pid 7) records it.
        groups[0].net_sources.push((7, Some(4026531992)));
        if eight_listed {
            groups[1].detailed = 1;
            context.socket_owners.insert(20001, 8);
        }
        context.attach_listeners(&mut groups, &candidates);
        groups
    }

    fn two_processes() -> TestProc {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "app");
            proc.file(pid, "net/tcp", TCP);
            proc.file(pid, "net/unix", UNIX);
        }
        proc
    }

    #[test]
    fn listeners_go_to_the_group_of_the_process_holding_them() {
        let proc = two_processes();
        // 7 is not listed: its descriptors are looked at only for the unowned TCP listener.
        proc.link(7, "fd/3", "socket:[31337]");
        let groups = attach(&proc, true);
        let tcp = &groups[0].report.listening;
        assert_eq!(tcp.len(), 1);
        assert_eq!(tcp[0].address.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(tcp[0].pid, Some(7));
        let unix = &groups[1].report.listening;
        assert_eq!(unix.len(), 1);
        assert_eq!(unix[0].path.as_deref(), Some("/run/app.sock"));
        assert_eq!(
            unix[0].reachable_at.as_deref(),
            Some(proc.path(8, "root/run/app.sock").to_str().unwrap())
        );
    }

    #[test]
    fn a_listener_nobody_holds_is_dropped_and_a_malformed_table_noted() {
        let proc = two_processes();
        proc.file(
            7,
            "net/udp",
            "header\n   0: zz:0035 00000000:0000 07 0:0 0:0 0 0 0 9 0\n",
        );
        let mut groups = attach(&proc, false);
        assert!(groups.iter().all(|group| group.report.listening.is_empty()));
        let notes = groups.swap_remove(0).notes.render();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("sockets of pid 7: malformed net/udp"),
            "{notes:?}"
        );
    }

    #[test]
    fn twenty_thousand_unix_listeners_are_cut_to_the_limit_and_counted() {
        let proc = two_processes();
        let mut unix = String::from("Num       RefCount Protocol Flags    Type St Inode Path\n");
        for inode in 100_000..120_000 {
            unix.push_str(&format!(
                "0000000000000000: 00000002 00000000 00010000 0001 01 {inode} /run/s{inode}.sock\n"
            ));
            holds_socket(&proc, inode);
        }
        proc.file(7, "net/unix", unix);
        let mut groups = attach(&proc, false);
        let group = groups.swap_remove(0);
        assert_eq!(group.report.listening.len(), MAX_LISTENERS);
        assert!(group.report.truncated);
        assert_eq!(
            group.notes.render(),
            ["listening sockets: 19744 more not listed (at most 256 per container)"]
        );
    }

    /// Pid 7 holds the socket of `inode`.
    fn holds_socket(proc: &TestProc, inode: u32) {
        proc.link(7, &format!("fd/{inode}"), &format!("socket:[{inode}]"));
    }
}
