//! Targets of `/proc/<pid>/fd/<n>` links: what kind of thing each descriptor is, as
//! `procfs-core` parses them.

use std::os::unix::ffi::OsStrExt;
use std::str::FromStr;

use procfs_core::process::FDTarget;

/// The kind of an open descriptor, as reported in `openFileKinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FdKind {
    File,
    Socket,
    Pipe,
    Anon,
    Device,
    Other,
}

impl FdKind {
    pub fn name(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Anon => "anon",
            FdKind::Device => "device",
            FdKind::Other => "other",
        }
    }
}

/// Classifies a link target: `socket:[123]`, `pipe:[4]`, `anon_inode:[eventfd]`, `/dev/null`,
/// `/etc/passwd`, `net:[4026531840]`, … A memfd (`/memfd:name`) counts as a file; what does
/// not parse, as other.
pub fn classify_fd_target(target: &[u8]) -> FdKind {
    match parse(target) {
        Some(FDTarget::Socket(_)) => FdKind::Socket,
        Some(FDTarget::Pipe(_)) => FdKind::Pipe,
        Some(FDTarget::AnonInode(_)) => FdKind::Anon,
        Some(FDTarget::Path(path)) if path.as_os_str().as_bytes().starts_with(b"/dev/") => {
            FdKind::Device
        }
        Some(FDTarget::Path(path)) if path.is_absolute() => FdKind::File,
        Some(FDTarget::MemFD(_)) => FdKind::File,
        _ => FdKind::Other,
    }
}

/// The inode of a `socket:[<inode>]` target, which `/proc/net/*` lists for each socket.
pub fn socket_inode(target: &[u8]) -> Option<u64> {
    match parse(target)? {
        FDTarget::Socket(inode) => Some(inode),
        _ => None,
    }
}

fn parse(target: &[u8]) -> Option<FDTarget> {
    FDTarget::from_str(&String::from_utf8_lossy(target)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (target, kind) in [
            (&b"socket:[3183]"[..], FdKind::Socket),
            (b"pipe:[77]", FdKind::Pipe),
            (b"anon_inode:[eventpoll]", FdKind::Anon),
            (b"anon_inode:inotify", FdKind::Anon),
            (b"/dev/null", FdKind::Device),
            (b"/dev/pts/0", FdKind::Device),
            (b"/var/log/nginx/access.log", FdKind::File),
            (b"/tmp/x (deleted)", FdKind::File),
            (b"net:[4026531840]", FdKind::Other),
            (b"/memfd:sealed (deleted)", FdKind::File),
            (b"/dev", FdKind::File),
            (b"", FdKind::Other),
        ] {
            assert_eq!(
                classify_fd_target(target),
                kind,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn socket_inodes() {
        assert_eq!(socket_inode(b"socket:[3183]"), Some(3183));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"pipe:[3183]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }
}
