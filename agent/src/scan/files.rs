//! Fingerprints of the requested files inside each container.

use procwatch_crds::FileFingerprint;

use crate::fingerprint::{fingerprint, size_text};
use crate::procfs_read::ReadFailure;

use super::group::{GroupReport, ScanContext};
use super::notes;

impl ScanContext<'_> {
    /// Fingerprints the requested files through the root of the first process that lets us.
    pub(super) fn fingerprint_files(&mut self, group: &mut GroupReport) {
        let pids: Vec<i32> = group.report.processes.iter().map(|p| p.pid).collect();
        for path in &self.options.files {
            let mut last_reason = None;
            let mut printed: Option<FileFingerprint> = None;
            for &pid in &pids {
                match self.scanner.root.open_in_root(pid, path) {
                    Ok(file) => {
                        match fingerprint(path, file, self.options.max_file_bytes) {
                            Ok(print) => printed = Some(print),
                            Err(error) => last_reason = Some(error.to_string()),
                        }
                        break;
                    }
                    // Another process of the container may still be readable.
                    Err(ReadFailure::Denied) => {
                        last_reason =
                            Some(notes::denied_reason(self.scanner.lacks_ptrace).to_string())
                    }
                    Err(ReadFailure::Gone) => {
                        last_reason = Some("not found".to_string());
                        break;
                    }
                    Err(failure) => {
                        last_reason = Some(self.scanner.reason(&failure));
                        break;
                    }
                }
            }
            match (printed, last_reason) {
                (Some(print), _) => {
                    if print.sha256.is_empty() {
                        group.notes.add_line(format!(
                            "file {path}: larger than {}: size and mode only",
                            size_text(self.options.max_file_bytes)
                        ));
                    }
                    group.report.files.push(print)
                }
                (None, Some(reason)) => group.notes.add_line(format!("file {path}: {reason}")),
                (None, None) => group
                    .notes
                    .add_line(format!("file {path}: no process to read it through")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use procwatch_crds::ProcessInfo;

    use super::super::ScanOptions;
    use super::super::test_proc::TestProc;
    use super::*;

    fn fingerprints(proc: &TestProc, pids: &[i32], files: &[&str]) -> GroupReport {
        let scanner = proc.scanner();
        let options = ScanOptions {
            files: files.iter().map(|f| f.to_string()).collect(),
            ..ScanOptions::default()
        };
        let mut context = ScanContext::new(&scanner, &options);
        let mut group = GroupReport::for_test();
        group.report.processes = pids
            .iter()
            .map(|&pid| ProcessInfo {
                pid,
                ..ProcessInfo::default()
            })
            .collect();
        context.fingerprint_files(&mut group);
        group
    }

    #[test]
    fn found_missing_and_not_regular() {
        let proc = TestProc::new();
        proc.process(7, "nginx");
        proc.file(7, "root/etc/nginx.conf", "events {}\n");
        std::fs::create_dir_all(proc.path(7, "root/etc/conf.d")).unwrap();
        let group = fingerprints(
            &proc,
            &[7],
            &["/etc/nginx.conf", "/etc/missing", "/etc/conf.d"],
        );
        assert_eq!(group.report.files.len(), 1);
        assert_eq!(group.report.files[0].path, "/etc/nginx.conf");
        assert_eq!(group.report.files[0].size, 10);
        assert_eq!(
            group.notes.render(),
            [
                "file /etc/conf.d: not a regular file (directory)",
                "file /etc/missing: not found"
            ]
        );
    }

    /// A FIFO, a socket and a device at requested paths: refused at once, never opened (a
    /// FIFO without a writer would block a reading open forever), each named by kind.
    #[test]
    fn special_files_are_refused_without_being_opened() {
        let proc = TestProc::new();
        proc.process(7, "app");
        proc.fifo(7, "root/x/fifo");
        let _socket =
            std::os::unix::net::UnixListener::bind(proc.path(7, "root/x/socket")).unwrap();
        // A twin of /dev/null.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            proc.path(7, "root/x/null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::stat("/dev/null").unwrap().st_rdev,
        )
        .expect("creating a device node needs CAP_MKNOD: run the agent's tests as root");
        let started = std::time::Instant::now();
        let group = fingerprints(&proc, &[7], &["/x/fifo", "/x/socket", "/x/null"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(group.report.files.is_empty());
        assert_eq!(
            group.notes.render(),
            [
                "file /x/fifo: not a regular file (fifo)",
                "file /x/null: not a regular file (character device)",
                "file /x/socket: not a regular file (socket)",
            ]
        );
    }

    #[test]
    fn a_sparse_terabyte_is_reported_by_size_and_mode_without_being_read() {
        let proc = TestProc::new();
        proc.process(7, "app");
        proc.file(7, "root/data", "");
        std::fs::File::options()
            .write(true)
            .open(proc.path(7, "root/data"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let group = fingerprints(&proc, &[7], &["/data"]);
        assert_eq!(group.report.files[0].size, 1 << 40);
        assert_eq!(group.report.files[0].sha256, "");
        assert_eq!(
            group.notes.render(),
            ["file /data: larger than 64 MiB: size and mode only"]
        );
    }

    #[test]
    fn a_container_with_no_listed_process_says_so() {
        let proc = TestProc::new();
        let group = fingerprints(&proc, &[], &["/etc/os-release"]);
        assert_eq!(
            group.notes.render(),
            ["file /etc/os-release: no process to read it through"]
        );
    }
}
