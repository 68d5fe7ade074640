//! Where the PID namespace of the proc root stands: the last pid allocated (the fifth field of
//! `loadavg`, which the kernel gives for the reader's own PID namespace) and `pid_max`. The
//! operator counts allocations between two reports from it, so processes that started and
//! exited between two scans are counted although no scan saw them.

use procfs_core::{FromRead, LoadAverage};
use procwatch_crds::report::PidCursor;

use crate::procfs_read::ProcRoot;

/// The cursor of `root`, or None when `loadavg` cannot be read or parsed (a fixture root, an
/// unusual kernel): reports then carry no pid figures.
pub fn cursor(root: &ProcRoot) -> Option<PidCursor> {
    let loadavg = root.read_root_file("loadavg").ok()?;
    let pid_max = root.read_root_file("sys/kernel/pid_max").ok();
    parse(&loadavg, pid_max.as_deref())
}

fn parse(loadavg: &[u8], pid_max: Option<&[u8]>) -> Option<PidCursor> {
    let load = LoadAverage::from_read(loadavg).ok()?;
    let pid_max = pid_max.and_then(|raw| std::str::from_utf8(raw).ok()?.trim().parse().ok());
    Some(PidCursor {
        last_pid: load.latest_pid,
        pid_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_field_is_the_last_pid() {
        let cursor = parse(b"0.52 0.58 0.59 2/1077 48213\n", Some(b"4194304\n")).unwrap();
        assert_eq!(
            cursor,
            PidCursor {
                last_pid: 48213,
                pid_max: Some(4194304)
            }
        );
    }

    #[test]
    fn an_unreadable_pid_max_is_left_out_and_a_malformed_loadavg_gives_nothing() {
        assert_eq!(
            parse(b"0.00 0.01 0.05 1/80 7\n", Some(b"many")).unwrap(),
            PidCursor {
                last_pid: 7,
                pid_max: None
            }
        );
        assert_eq!(parse(b"0.00 0.01 0.05 1/80\n", None), None);
        assert_eq!(parse(b"", None), None);
    }

    /// On this machine's /proc: a process started in between moves the cursor past its pid.
    #[test]
    fn a_new_process_moves_the_cursor_of_the_real_proc() {
        let root = ProcRoot::open("/proc").unwrap();
        let before = cursor(&root).expect("/proc/loadavg is readable");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let after = cursor(&root).unwrap();
        child.wait().unwrap();
        assert!(after.pid_max.is_some_and(|max| max > pid));
        // Unless the pids wrapped around meanwhile, the cursor is at or past the child's pid.
        if after.last_pid >= before.last_pid {
            assert!(after.last_pid >= pid, "{before:?} {after:?} child {pid}");
        }
    }
}
