//! The I/O edge: reads one /proc root (default `/proc`; a recorded fixture directory in tests).
//!
//! Every per-process read returns a [`ReadFailure`] that says whether the process is gone (it
//! exited: skip it and count it) or the agent may not read the file (report it as unreadable)
//! so the scanner never fails because of one process.
//!
//! Files of a process are opened relative to a descriptor of its `/proc/<pid>` directory, kept
//! while the scanner reads that process: the kernel then resolves one name instead of the whole
//! path each time, and every read is of the same process even if its pid is reused meanwhile.

use std::cell::RefCell;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::parse::ParseError;

/// Why a proc root cannot be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ProcRootError {
    #[error("{path} is not a proc filesystem: {missing} is missing")]
    NotProc {
        path: PathBuf,
        missing: &'static str,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// Why one file of one process could not be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The process exited (ENOENT, ESRCH).
    Gone,
    /// The agent lacks the right (EACCES, EPERM): ptrace access for environ, fd, maps, root.
    Denied,
    /// The path names something other than a regular file (a FIFO, socket, device or
    /// directory), which the agent never opens for reading: its kind, like `fifo`.
    NotRegular(&'static str),
    /// Anything else, kept for the message.
    Other(io::Error),
}

impl From<Errno> for ReadFailure {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::NOENT | Errno::SRCH => ReadFailure::Gone,
            Errno::ACCESS | Errno::PERM => ReadFailure::Denied,
            errno => ReadFailure::Other(errno.into()),
        }
    }
}

impl From<io::Error> for ReadFailure {
    fn from(error: io::Error) -> Self {
        Errno::from_io_error(&error).map_or(ReadFailure::Other(error), ReadFailure::from)
    }
}

/// A validated proc root.
#[derive(Debug)]
pub struct ProcRoot {
    path: PathBuf,
    /// The directory of the process being read: (pid, descriptor).
    current: RefCell<Option<(i32, OwnedFd)>>,
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
        Ok(ProcRoot {
            path,
            current: RefCell::new(None),
        })
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

    /// Runs `read` with the descriptor of `/proc/<pid>`, opening it unless it is the one held.
    fn in_process_dir<T>(
        &self,
        pid: i32,
        read: impl FnOnce(BorrowedFd<'_>) -> Result<T, ReadFailure>,
    ) -> Result<T, ReadFailure> {
        let mut current = self.current.borrow_mut();
        if current.as_ref().is_none_or(|(held, _)| *held != pid) {
            let directory = rustix::fs::open(
                self.path.join(pid.to_string()),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            *current = Some((pid, directory));
        }
        let (_, directory) = current.as_ref().expect("opened above");
        read(directory.as_fd())
    }

    fn open_file(&self, pid: i32, name: &str) -> Result<File, ReadFailure> {
        self.in_process_dir(pid, |directory| {
            Ok(File::from(rustix::fs::openat(
                directory,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )?))
        })
    }

    /// Reads up to `limit` bytes of a one-record file of a process (`stat`, `status`, `cgroup`,
    /// `cmdline`, `environ`). The kernel writes such a file in one read when the buffer is big
    /// enough, so a short read is its end: this saves the read that would only confirm EOF.
    /// `buffer` is scratch space, reused across reads.
    pub fn read_record<'b>(
        &self,
        pid: i32,
        name: &str,
        buffer: &'b mut Vec<u8>,
        limit: usize,
    ) -> Result<&'b [u8], ReadFailure> {
        read_bounded(self.open_file(pid, name)?, buffer, limit, true)
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
        read_bounded(self.open_file(pid, name)?, buffer, limit, false)
    }

    /// Where `/proc/<pid>/<name>` points: `socket:[123]`, `/usr/bin/sleep`, `mnt:[4026531840]`.
    pub fn read_link(&self, pid: i32, name: &str) -> Result<PathBuf, ReadFailure> {
        self.in_process_dir(pid, |directory| {
            let target = rustix::fs::readlinkat(directory, name, Vec::new())?;
            Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
        })
    }

    /// The inode of a namespace link (`ns/mnt`, `ns/net`).
    pub fn namespace_inode(&self, pid: i32, name: &str) -> Result<u64, ReadFailure> {
        // `mnt:[4026531840]`: read into the stack, as every process's is read.
        let mut target = [0u8; 64];
        let len = self.in_process_dir(pid, |directory| {
            Ok(rustix::fs::readlinkat_raw(
                directory,
                name,
                &mut target[..],
            )?)
        })?;
        let bytes = &target[..len];
        let start = bytes.iter().position(|&b| b == b'[').map_or(0, |p| p + 1);
        let end = bytes
            .iter()
            .rposition(|&b| b == b']')
            .unwrap_or(bytes.len());
        std::str::from_utf8(bytes.get(start..end).unwrap_or_default())
            .ok()
            .filter(|_| len < target.len())
            .and_then(|inode| inode.parse().ok())
            .ok_or_else(|| {
                let target = String::from_utf8_lossy(bytes);
                ReadFailure::Other(io::Error::other(format!("odd namespace link {target:?}")))
            })
    }

    /// Calls `each` with the link target of every open descriptor of the process.
    pub fn for_each_fd_target(
        &self,
        pid: i32,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ReadFailure> {
        self.in_process_dir(pid, |directory| {
            let fds = rustix::fs::openat(
                directory,
                "fd",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut target = Vec::new();
            for entry in Dir::read_from(&fds)? {
                let entry = entry?;
                let name: &CStr = entry.file_name();
                if name.to_bytes().starts_with(b".") {
                    continue;
                }
                // A descriptor closed between listing and reading is not an error.
                if let Ok(link) = rustix::fs::readlinkat(&fds, name, std::mem::take(&mut target)) {
                    each(link.as_bytes());
                    target = link.into_bytes();
                }
            }
            Ok(())
        })
    }

    /// Whether the process still exists (a zombie still does).
    pub fn is_alive(&self, pid: i32) -> bool {
        std::fs::symlink_metadata(self.pid_path(pid, "stat")).is_ok()
    }

    /// Opens the regular file `path` inside the process's root directory, resolving symlinks and
    /// `..` as the process would (an absolute link in a container must not escape into the
    /// agent's own filesystem).
    ///
    /// The workload owns that filesystem, so nothing it puts there may block the agent: the
    /// path is first opened with `O_PATH`, which opens nothing (a FIFO's open would wait for a
    /// writer, a device's would run its driver), and only a regular file is then opened for
    /// reading, without blocking, and checked to be the same file.
    pub fn open_in_root(&self, pid: i32, path: &str) -> Result<File, ReadFailure> {
        let root = self.in_process_dir(pid, |directory| {
            Ok(rustix::fs::openat(
                directory,
                "root",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        })?;
        let relative = path.trim_start_matches('/');
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let located = rustix::fs::openat2(
            &root,
            relative,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )?;
        let expected = rustix::fs::fstat(&located)?;
        let kind = FileType::from_raw_mode(expected.st_mode);
        if kind != FileType::RegularFile {
            return Err(ReadFailure::NotRegular(kind_name(kind)));
        }
        let file = rustix::fs::openat2(
            &root,
            relative,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            resolve,
        )?;
        let opened = rustix::fs::fstat(&file)?;
        if (opened.st_dev, opened.st_ino) != (expected.st_dev, expected.st_ino) {
            // Swapped between the two opens: refused, whatever it is now.
            return Err(ReadFailure::Other(io::Error::other(
                "replaced while being opened",
            )));
        }
        Ok(File::from(file))
    }

    /// `/proc/<pid>/root<path>` as a path string, for `reachableAt`.
    pub fn path_in_root(&self, pid: i32, path: &str) -> String {
        let mut reachable = self.pid_path(pid, "root").into_os_string();
        reachable.push(OsStr::new(path));
        reachable.to_string_lossy().into_owned()
    }
}

/// How an `unreadable` line names a kind of file.
fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "unknown kind",
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

/// Clock ticks per second (`USER_HZ`), the unit of CPU times in /proc.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The unit of RSS in `/proc/<pid>/stat`.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}
