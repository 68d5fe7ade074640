//! User names from each container's own `/etc/passwd`.

use std::io::Read;

use crate::fingerprint::size_text;
use crate::parse::passwd;
use crate::procfs_read::ReadFailure;

use super::candidates::Candidate;
use super::group::{GroupReport, ScanContext};

/// The longest `/etc/passwd` read.
const PASSWD_LIMIT: u64 = 1024 * 1024;

impl ScanContext<'_> {
    /// The user name from the process's own /etc/passwd, read once per group and mount namespace.
    pub(super) fn user_name(
        &mut self,
        candidate: &Candidate,
        uid: u32,
        group: &mut GroupReport,
    ) -> Option<String> {
        let namespace = candidate.identity.mount_namespace;
        let pid = candidate.stat.pid;
        if !self.users.contains_key(&namespace) {
            let users = match self.read_in_root(pid, "/etc/passwd") {
                Ok((text, whole)) => {
                    let users = passwd::parse_passwd(&text);
                    if !whole {
                        group.notes.add(
                            "/etc/passwd",
                            pid,
                            format!("larger than {}: the rest not read", size_text(PASSWD_LIMIT)),
                        );
                    }
                    if users.cut > 0 {
                        group.notes.add(
                            "/etc/passwd",
                            pid,
                            format!(
                                "{} user names cut to {} bytes",
                                users.cut,
                                passwd::MAX_USER_NAME_BYTES
                            ),
                        );
                    }
                    Some(users.names)
                }
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

    /// The first [`PASSWD_LIMIT`] bytes of a file, and whether that is all of it.
    fn read_in_root(&self, pid: i32, path: &str) -> Result<(Vec<u8>, bool), ReadFailure> {
        let file = self.scanner.root.open_in_root(pid, path)?;
        let mut text = Vec::new();
        file.take(PASSWD_LIMIT + 1).read_to_end(&mut text)?;
        let whole = text.len() as u64 <= PASSWD_LIMIT;
        text.truncate(PASSWD_LIMIT as usize);
        Ok((text, whole))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ScanOptions;
    use super::super::test_proc::TestProc;
    use super::*;

    /// The user names of processes 7 (uid 0) and 8 (uid 101), and the container's notes.
    fn names(proc: &TestProc) -> (Option<String>, Option<String>, Vec<String>) {
        let (scanner, candidates) = proc.first_pass();
        let options = ScanOptions::default();
        let mut context = ScanContext::new(&scanner, &options);
        let mut group = GroupReport::for_test();
        let root = context.user_name(&candidates[0], 0, &mut group);
        let nginx = context.user_name(&candidates[1], 101, &mut group);
        (root, nginx, group.notes.render())
    }

    #[test]
    fn names_from_the_container_passwd_read_once_per_namespace() {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "nginx");
            proc.link(pid, "ns/mnt", "mnt:[20]");
        }
        proc.file(
            7,
            "root/etc/passwd",
            "root:x:0:0::/:/bin/sh\nnginx:x:101:101::/:/bin/sh\n",
        );
        // Never read: 8 shares 7's mount namespace.
        proc.file(8, "root/etc/passwd", "other:x:101:101::/:/bin/sh\n");
        let (root, nginx, notes) = names(&proc);
        assert_eq!(root.as_deref(), Some("root"));
        assert_eq!(nginx.as_deref(), Some("nginx"));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_fifo_for_passwd_is_refused_without_blocking() {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "app");
            proc.link(pid, "ns/mnt", "mnt:[20]");
        }
        proc.fifo(7, "root/etc/passwd");
        let (root, nginx, notes) = names(&proc);
        assert_eq!((root, nginx), (None, None));
        assert_eq!(notes, ["/etc/passwd of pid 7: not a regular file (fifo)"]);
    }

    #[test]
    fn a_megabyte_user_name_is_cut_and_the_rest_of_the_file_noted() {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "app");
            proc.link(pid, "ns/mnt", "mnt:[20]");
        }
        let long = "u".repeat(1024 * 1024);
        proc.file(
            7,
            "root/etc/passwd",
            format!("root:x:0:0::/:/bin/sh\n{long}:x:101:101::/:\n"),
        );
        let (root, nginx, notes) = names(&proc);
        assert_eq!(root.as_deref(), Some("root"));
        // The long line is cut by the file's limit before its uid: that user is unknown.
        assert_eq!(nginx, None);
        assert_eq!(
            notes,
            ["/etc/passwd of pid 7: larger than 1 MiB: the rest not read"]
        );

        proc.file(
            7,
            "root/etc/passwd",
            format!("{}:x:0:0::/:/bin/sh\n", "u".repeat(100_000)),
        );
        let (root, _, notes) = names(&proc);
        assert_eq!(
            root.map(|name| name.len()),
            Some(passwd::MAX_USER_NAME_BYTES)
        );
        assert_eq!(
            notes,
            ["/etc/passwd of pid 7: 1 user names cut to 64 bytes"]
        );
    }

    #[test]
    fn a_container_without_passwd_has_no_names_and_nothing_to_note() {
        let proc = TestProc::new();
        for pid in [7, 8] {
            proc.process(pid, "app");
            std::fs::create_dir_all(proc.path(pid, "root")).unwrap();
        }
        assert_eq!(names(&proc), (None, None, Vec::new()));
    }
}
