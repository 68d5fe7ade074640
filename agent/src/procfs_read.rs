//! The I/O edge: reads one /proc root (default `/proc`; a recorded fixture directory in tests).
//!
//! Every per-process read returns a [`ReadFailure`] that says whether the process is gone (it
//! exited: skip it and count it) or the agent may not read the file (report it as unreadable)
//! so the scanner never fails because of one process.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::parse::ParseError;

/// Why a proc root cannot be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ProcRootError {
    #[error("{path} is not a proc filesystem: {missing} is missing")]
    NotProc {
        path: PathBuf,
        missing: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

/// Why one file of one process could not be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The process exited (ENOENT, ESRCH).
    Gone,
    /// The agent lacks the right (EACCES, EPERM): ptrace access for environ, fd, maps, root.
    Denied,
    /// Anything else, kept for the message.
    Other(io::Error),
}

impl From<io::Error> for ReadFailure {
    fn from(error: io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => ReadFailure::Gone,
            Some(libc::EACCES | libc::EPERM) => ReadFailure::Denied,
            _ => ReadFailure::Other(error),
        }
    }
}

/// A validated proc root.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    path: PathBuf,
}

impl ProcRoot {
    /// Checks that `path` looks like a proc filesystem: it has `self` and `stat`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ProcRootError> {
        let path = path.into();
        for missing in ["stat", "self"] {
            if std::fs::symlink_metadata(path.join(missing)).is_err() {
                return Err(ProcRootError::NotProc { path, missing });
            }
        }
        Ok(ProcRoot { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pids of every process (thread group leaders; threads are not listed).
    pub fn pids(&self) -> Result<Vec<i32>, ProcRootError> {
        let entries = std::fs::read_dir(&self.path).map_err(|source| ProcRootError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut pids: Vec<i32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// The agent's own pid as this proc root counts it.
    pub fn self_pid(&self) -> Option<i32> {
        std::fs::read_link(self.path.join("self"))
            .ok()?
            .to_str()?
            .parse()
            .ok()
    }

    /// Reads a file of the proc root itself (`stat`), whole.
    pub fn read_root_file(&self, name: &str) -> Result<Vec<u8>, ProcRootError> {
        let path = self.path.join(name);
        std::fs::read(&path).map_err(|source| ProcRootError::Io { path, source })
    }

    pub fn pid_path(&self, pid: i32, name: &str) -> PathBuf {
        let mut path = self.path.join(pid.to_string());
        path.push(name);
        path
    }

    /// Reads up to `limit` bytes of a one-record file of a process (`stat`, `status`, `cgroup`,
    /// `cmdline`, `environ`). The kernel writes such a file in one read when the buffer is big
    /// enough, so a short read is its end: this saves the read that would only confirm EOF
    /// (a quarter of all syscalls of a scan). `buffer` is scratch space, reused across reads.
    pub fn read_record<'b>(
        &self,
        pid: i32,
        name: &str,
        buffer: &'b mut Vec<u8>,
        limit: usize,
    ) -> Result<&'b [u8], ReadFailure> {
        read_bounded(File::open(self.pid_path(pid, name))?, buffer, limit, true)
    }

    /// Reads up to `limit` bytes of a many-record file of a process (`maps`, `net/tcp`), to its
    /// end: these may return short reads before the end.
    pub fn read_whole<'b>(
        &self,
        pid: i32,
        name: &str,
        buffer: &'b mut Vec<u8>,
        limit: usize,
    ) -> Result<&'b [u8], ReadFailure> {
        read_bounded(File::open(self.pid_path(pid, name))?, buffer, limit, false)
    }

    /// Where `/proc/<pid>/<name>` points: `socket:[123]`, `/usr/bin/sleep`, `mnt:[4026531840]`.
    pub fn read_link(&self, pid: i32, name: &str) -> Result<PathBuf, ReadFailure> {
        Ok(std::fs::read_link(self.pid_path(pid, name))?)
    }

    /// The inode of a namespace link (`ns/mnt`, `ns/net`).
    pub fn namespace_inode(&self, pid: i32, name: &str) -> Result<u64, ReadFailure> {
        let target = self.read_link(pid, name)?;
        let bytes = target.as_os_str().as_bytes();
        let start = bytes.iter().position(|&b| b == b'[').map_or(0, |p| p + 1);
        let end = bytes
            .iter()
            .rposition(|&b| b == b']')
            .unwrap_or(bytes.len());
        std::str::from_utf8(bytes.get(start..end).unwrap_or_default())
            .ok()
            .and_then(|inode| inode.parse().ok())
            .ok_or_else(|| {
                ReadFailure::Other(io::Error::other(format!("odd namespace link {target:?}")))
            })
    }

    /// Calls `each` with the link target of every open descriptor of the process.
    pub fn for_each_fd_target(
        &self,
        pid: i32,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ReadFailure> {
        let directory = self.pid_path(pid, "fd");
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            // A descriptor closed between listing and reading is not an error.
            if let Ok(target) = std::fs::read_link(entry.path()) {
                each(target.as_os_str().as_bytes());
            }
        }
        Ok(())
    }

    /// Whether the process still exists (a zombie still does).
    pub fn is_alive(&self, pid: i32) -> bool {
        std::fs::symlink_metadata(self.pid_path(pid, "stat")).is_ok()
    }

    /// Opens `path` inside the process's root directory, resolving symlinks and `..` as the
    /// process would (an absolute link in a container must not escape into the agent's own
    /// filesystem).
    pub fn open_in_root(&self, pid: i32, path: &str) -> Result<File, ReadFailure> {
        let root = File::open(self.pid_path(pid, "root"))?;
        open_beneath(&root, path.trim_start_matches('/'))
    }

    /// `/proc/<pid>/root<path>` as a path string, for `reachableAt`.
    pub fn path_in_root(&self, pid: i32, path: &str) -> String {
        let mut reachable = self.pid_path(pid, "root").into_os_string();
        reachable.push(OsStr::new(path));
        reachable.to_string_lossy().into_owned()
    }
}

/// Reads `file` into `buffer` (grown as needed, never shrunk, so it is zeroed only once) up to
/// `limit` bytes, stopping at the first short read when `short_read_is_end`.
fn read_bounded(
    mut file: File,
    buffer: &mut Vec<u8>,
    limit: usize,
    short_read_is_end: bool,
) -> Result<&[u8], ReadFailure> {
    let mut len = 0;
    loop {
        if len == buffer.len() {
            if len >= limit {
                break;
            }
            buffer.resize((len * 2).clamp(4096, limit), 0);
        }
        let end = buffer.len().min(limit);
        let read = match file.read(&mut buffer[len..end]) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        len += read;
        if read == 0 || (short_read_is_end && len < end) {
            break;
        }
    }
    Ok(&buffer[..len])
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(root, path, O_RDONLY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_beneath(root: &File, path: &str) -> Result<File, ReadFailure> {
    let c_path = std::ffi::CString::new(path).map_err(|_| {
        ReadFailure::Other(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains NUL",
        ))
    })?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: the pointers are valid for the call and `how`'s size is passed with it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Clock ticks per second (`USER_HZ`) and the page size, to turn /proc numbers into units.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}
