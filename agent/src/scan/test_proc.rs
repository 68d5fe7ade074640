//! Small proc roots in temporary directories for the scanner's unit tests: only the files a
//! test names, so each test shows what the code under test reads.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::candidates::Candidate;
use super::{ScanOptions, Scanner};

pub(super) struct TestProc {
    dir: tempfile::TempDir,
}

impl TestProc {
    /// A proc root with `stat` (boot time) and `self` (pid 1) and no process.
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), "cpu 1 2 3 4\nbtime 1732838400\n").unwrap();
        symlink("1", dir.path().join("self")).unwrap();
        TestProc { dir }
    }

    /// A process with a stat line (10 + 5 ticks of CPU, started 1000 ticks after boot, 100
    /// pages), a status (uid 0), a command line (its name) and an empty cgroup.
    pub(super) fn process(&self, pid: i32, comm: &str) {
        self.file(
            pid,
            "stat",
            format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 10 5 0 0 20 0 1 0 1000 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
            ),
        );
        self.file(
            pid,
            "status",
            format!("Name:\t{comm}\nUid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n"),
        );
        self.file(pid, "cmdline", format!("{comm}\0"));
        self.file(pid, "cgroup", "0::/\n");
    }

    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn path(&self, pid: i32, name: &str) -> PathBuf {
        self.root().join(pid.to_string()).join(name)
    }

    pub(super) fn file(&self, pid: i32, name: &str, content: impl AsRef<[u8]>) {
        let path = self.path(pid, name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub(super) fn link(&self, pid: i32, name: &str, target: &str) {
        let path = self.path(pid, name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// A FIFO at `name`, which no one writes to.
    pub(super) fn fifo(&self, pid: i32, name: &str) {
        let path = self.path(pid, name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    pub(super) fn scanner(&self) -> Scanner {
        Scanner::new(self.root()).unwrap()
    }

    /// The scanner and its first pass over every process, the details left for later.
    pub(super) fn first_pass(&self) -> (Scanner, Vec<Candidate>) {
        let mut scanner = self.scanner();
        let options = ScanOptions {
            max_processes: 0,
            ..ScanOptions::default()
        };
        let mut vanished = 0;
        let candidates = scanner
            .read_candidates(&options, &mut vanished, None)
            .unwrap()
            .candidates;
        assert_eq!(vanished, 0);
        (scanner, candidates)
    }
}
