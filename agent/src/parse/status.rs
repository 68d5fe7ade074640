//! `/proc/<pid>/status`: `Key:\tvalue` lines. Fields come and go with kernel versions
//! (`NoNewPrivs` since 4.10, `Seccomp` since 3.8), so each is optional.

use procwatch_crds::SeccompMode;

/// The fields of `/proc/<pid>/status` the scanner uses; `None` when the line is absent or odd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidStatus {
    /// Effective uid (the second of the four `Uid:` numbers), as `ps -o uid` shows.
    pub effective_uid: Option<u32>,
    /// `VmRSS:` in bytes: exact, where the RSS in `stat` is a per-CPU approximation on recent
    /// kernels. Kernel threads have none.
    pub rss_bytes: Option<u64>,
    /// The `CapEff:` bit set.
    pub effective_capabilities: Option<u64>,
    pub no_new_privs: Option<bool>,
    pub seccomp: Option<SeccompMode>,
}

pub fn parse_pid_status(text: &[u8]) -> PidStatus {
    let mut status = PidStatus::default();
    // Bytes, not text: a thousand processes' status files add up, and only the values of the
    // keys below need to be text (the `Name:` line may not be UTF-8).
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = || {
            std::str::from_utf8(&line[colon + 1..])
                .unwrap_or_default()
                .trim()
        };
        match &line[..colon] {
            b"Uid" => {
                status.effective_uid = value()
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok());
            }
            b"VmRSS" => {
                status.rss_bytes = value()
                    .strip_suffix(" kB")
                    .and_then(|kib| kib.trim().parse::<u64>().ok())
                    .map(|kib| kib * 1024)
            }
            b"CapEff" => status.effective_capabilities = u64::from_str_radix(value(), 16).ok(),
            b"NoNewPrivs" => {
                status.no_new_privs = match value() {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            b"Seccomp" => {
                status.seccomp = match value() {
                    "0" => Some(SeccompMode::Disabled),
                    "1" => Some(SeccompMode::Strict),
                    "2" => Some(SeccompMode::Filter),
                    _ => None,
                }
            }
            _ => continue,
        }
        // The rest of the file (signal, CPU and memory masks, context switches) says nothing
        // the scanner uses.
        if status.effective_uid.is_some()
            && status.rss_bytes.is_some()
            && status.effective_capabilities.is_some()
            && status.no_new_privs.is_some()
            && status.seccomp.is_some()
        {
            break;
        }
    }
    status
}

/// Capability names by bit number (linux/capability.h), without the `CAP_` prefix.
const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Bit number of CAP_SYS_PTRACE, which the agent needs to read other users' environ, fd, maps
/// and root.
pub const CAP_SYS_PTRACE_BIT: u32 = 19;

/// Names of the capabilities in `set`, lowest bit first; bits newer than this table are named
/// by number (`CAP_41`) so nothing is hidden.
pub fn capability_names(set: u64) -> Vec<String> {
    // Exact capacity: root's 41 names on each of a thousand processes add up.
    let mut names = Vec::with_capacity(set.count_ones() as usize);
    names.extend((0..64).filter(|bit| set & (1u64 << bit) != 0).map(|bit| {
        match CAPABILITY_NAMES.get(bit as usize) {
            Some(name) => (*name).to_string(),
            None => format!("CAP_{bit}"),
        }
    }));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX_STATUS: &[u8] =
        b"Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nPid:\t7\nPPid:\t1\n\
Uid:\t0\t101\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\t    7688 kB\nThreads:\t1\n\
CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    #[test]
    fn reads_uid_rss_capabilities_seccomp() {
        let status = parse_pid_status(NGINX_STATUS);
        assert_eq!(
            status,
            PidStatus {
                effective_uid: Some(101),
                rss_bytes: Some(7688 * 1024),
                effective_capabilities: Some(0xa80425fb),
                no_new_privs: Some(true),
                seccomp: Some(SeccompMode::Filter),
            }
        );
    }

    #[test]
    fn docker_default_capabilities_by_name() {
        assert_eq!(
            capability_names(0xa80425fb),
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "NET_RAW",
                "SYS_CHROOT",
                "MKNOD",
                "AUDIT_WRITE",
                "SETFCAP"
            ]
        );
        assert!(capability_names(0).is_empty());
        assert_eq!(
            capability_names(1 << 40 | 1 << 41),
            ["CHECKPOINT_RESTORE", "CAP_41"]
        );
    }

    #[test]
    fn old_kernels_and_odd_values_leave_fields_unknown() {
        // A 3.x kernel: no NoNewPrivs, no Seccomp; a garbled CapEff and Uid.
        let status = parse_pid_status(
            b"Name:\tinit\nUid:\t0\nThreads:\tmany\nVmRSS:\t12 MB\nCapEff:\tzz\nSeccomp:\t9\n",
        );
        assert_eq!(status, PidStatus::default());
        assert_eq!(parse_pid_status(b""), PidStatus::default());
        assert_eq!(
            parse_pid_status(b"\xff\xfe garbage without colons"),
            PidStatus::default()
        );
    }
}
