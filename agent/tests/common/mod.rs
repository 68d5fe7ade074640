//! Builds directories laid out like /proc, recorded from real nodes, for the scanner tests.

#![allow(dead_code)] // Each test crate uses its own part of this module.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub const BOOT_TIME: u64 = 1_732_838_400;

pub struct FakeProc {
    pub dir: tempfile::TempDir,
}

pub struct FakeProcess {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub state: char,
    pub uid: u32,
    pub threads: u32,
    pub utime: u64,
    pub stime: u64,
    pub start_ticks: u64,
    pub rss_pages: u64,
    pub cmdline: Vec<u8>,
    pub cgroup: String,
    pub mount_namespace: Option<u64>,
    pub net_namespace: u64,
    pub environ: Vec<u8>,
    pub cap_eff: String,
    pub fds: Vec<String>,
    pub exe: Option<String>,
}

impl FakeProcess {
    pub fn new(pid: i32, comm: &str, cmdline: &[u8]) -> Self {
        FakeProcess {
            pid,
            ppid: 1,
            comm: comm.into(),
            state: 'S',
            uid: 0,
            threads: 1,
            utime: 10,
            stime: 5,
            start_ticks: 1000,
            rss_pages: 100,
            cmdline: cmdline.to_vec(),
            cgroup: "0::/\n".into(),
            mount_namespace: Some(4026531840),
            net_namespace: 4026531992,
            environ: b"PATH=/bin\0".to_vec(),
            cap_eff: "0000000000000000".into(),
            fds: vec!["/dev/null".into()],
            exe: Some("/bin/sh".into()),
        }
    }

    /// Its `/proc/<pid>/stat` line.
    pub fn stat_line(&self) -> String {
        format!(
            "{} ({}) {} {} {} {} 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 {} 0 {} 1000000 {} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
            self.pid,
            self.comm,
            self.state,
            self.ppid,
            self.pid,
            self.pid,
            self.utime,
            self.stime,
            self.threads,
            self.start_ticks,
            self.rss_pages
        )
    }
}

impl FakeProc {
    /// An empty proc root whose `self` is `agent_pid`.
    pub fn new(agent_pid: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            format!("cpu 1 2 3 4\nbtime {BOOT_TIME}\n"),
        )
        .unwrap();
        symlink(agent_pid.to_string(), dir.path().join("self")).unwrap();
        FakeProc { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid_dir(&self, pid: i32) -> PathBuf {
        self.dir.path().join(pid.to_string())
    }

    pub fn add(&self, p: &FakeProcess) {
        let dir = self.pid_dir(p.pid);
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::fs::write(dir.join("stat"), p.stat_line()).unwrap();
        std::fs::write(
            dir.join("status"),
            format!(
                "Name:\t{}\nState:\t{}\nPid:\t{}\nPPid:\t{}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{}\nCapEff:\t{}\nNoNewPrivs:\t0\nSeccomp:\t0\n",
                p.comm, p.state, p.pid, p.ppid, p.threads, p.cap_eff, uid = p.uid
            ),
        )
        .unwrap();
        std::fs::write(dir.join("cmdline"), &p.cmdline).unwrap();
        std::fs::write(dir.join("cgroup"), &p.cgroup).unwrap();
        std::fs::write(dir.join("environ"), &p.environ).unwrap();
        if let Some(namespace) = p.mount_namespace {
            symlink(format!("mnt:[{namespace}]"), dir.join("ns/mnt")).unwrap();
        }
        symlink(format!("net:[{}]", p.net_namespace), dir.join("ns/net")).unwrap();
        for (n, target) in p.fds.iter().enumerate() {
            symlink(target, dir.join("fd").join(n.to_string())).unwrap();
        }
        if let Some(exe) = &p.exe {
            symlink(exe, dir.join("exe")).unwrap();
        }
        symlink("/", dir.join("cwd")).unwrap();
        for table in ["tcp", "tcp6", "udp", "udp6", "unix"] {
            std::fs::write(dir.join("net").join(table), "header\n").unwrap();
        }
    }

    pub fn write(&self, pid: i32, name: &str, content: impl AsRef<[u8]>) {
        let path = self.pid_dir(pid).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Writes the same file for every process present.
    pub fn write_all(&self, name: &str, content: impl AsRef<[u8]>) {
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let entry = entry.unwrap();
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            {
                self.write(pid, name, content.as_ref());
            }
        }
    }
}

pub mod containers;
pub mod operator;
#[path = "../../../tests/support/skip.rs"]
pub mod skip;
