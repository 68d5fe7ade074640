//! Every parser against arbitrary bytes: a workload writes most of what the agent parses (its
//! command line, environment, `/etc/passwd`, socket paths, mapped file names, even `comm`), so
//! none may panic, and what comes out may not outgrow what went in.

use std::collections::BTreeSet;

use procwatch_crds::{EnvironmentPolicy, SocketProtocol};
use proptest::prelude::*;

use super::*;

/// A lossy UTF-8 decoding turns one invalid byte into a 3-byte replacement character.
const LOSSY_GROWTH: usize = 3;

/// Bytes that are mostly what /proc files are made of (digits, hex, separators, newlines, NUL),
/// with anything else mixed in: arbitrary bytes alone rarely get past a parser's first check.
fn proc_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF :()/\t\n\0-[]x.".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..2048)
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proc_like_bytes(),
        prop::collection::vec(any::<u8>(), 0..2048)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cmdline(raw in inputs()) {
        let args = cmdline::parse_cmdline(&raw);
        prop_assert!(args.len() <= raw.len().min(cmdline::MAX_ARGS_BYTES) * LOSSY_GROWTH + '…'.len_utf8());
    }

    #[test]
    fn environ(raw in inputs()) {
        for policy in [EnvironmentPolicy::None, EnvironmentPolicy::Names, EnvironmentPolicy::Redacted] {
            let environment = environ::parse_environ(&raw, policy);
            prop_assert!(environment.entries.len() <= environ::MAX_VARIABLES);
            let bytes: usize = environment.entries.iter().map(String::len).sum();
            // A masked or cut value may end in a marker of a few bytes.
            prop_assert!(bytes <= raw.len() * LOSSY_GROWTH + environment.entries.len() * 16);
        }
    }

    #[test]
    fn fd_targets(raw in inputs()) {
        let _ = fd::classify_fd_target(&raw).name();
        let _ = fd::socket_inode(&raw);
    }

    #[test]
    fn maps(raw in inputs()) {
        let mut libraries = BTreeSet::new();
        let _ = maps::collect_executable_mappings(&raw, &mut libraries);
        let bytes: usize = libraries.iter().map(String::len).sum();
        prop_assert!(bytes <= raw.len() * LOSSY_GROWTH);
    }

    #[test]
    fn net_tables(raw in inputs()) {
        let lines = raw.split(|&b| b == b'\n').count();
        for protocol in [SocketProtocol::Tcp, SocketProtocol::Udp] {
            if let Ok(listeners) = net::parse_inet_listeners(&raw, protocol) {
                prop_assert!(listeners.len() <= lines);
            }
        }
        let unix = net::parse_unix_listeners(&raw);
        prop_assert!(unix.len() <= lines);
        let bytes: usize = unix.iter().map(|listener| listener.path.len()).sum();
        prop_assert!(bytes <= raw.len() * LOSSY_GROWTH);
    }

    #[test]
    fn passwd(raw in inputs()) {
        let users = passwd::parse_passwd(&raw);
        prop_assert!(users.names.len() <= raw.split(|&b| b == b'\n').count());
        prop_assert!(users.names.values().all(|name| name.len() <= passwd::MAX_USER_NAME_BYTES));
    }

    #[test]
    fn stat(raw in inputs()) {
        if let Ok(stat) = stat::parse_pid_stat(&raw) {
            prop_assert!(stat.comm.len() <= raw.len() * LOSSY_GROWTH);
        }
        let _ = stat::parse_boot_time(&raw);
    }

    #[test]
    fn status(raw in inputs()) {
        let status = status::parse_pid_status(&raw);
        if let Some(capabilities) = status.effective_capabilities {
            prop_assert!(status::capability_names(capabilities).len() <= 64);
        }
    }
}
