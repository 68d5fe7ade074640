//! Targets of `/proc/<pid>/fd/<n>` links: what kind of thing each descriptor is.

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
/// `/etc/passwd`, `net:[4026531840]`, …
pub fn classify_fd_target(target: &[u8]) -> FdKind {
    if target.starts_with(b"socket:[") {
        FdKind::Socket
    } else if target.starts_with(b"pipe:[") {
        FdKind::Pipe
    } else if target.starts_with(b"anon_inode:") {
        FdKind::Anon
    } else if target.starts_with(b"/dev/") {
        FdKind::Device
    } else if target.starts_with(b"/") {
        FdKind::File
    } else {
        FdKind::Other
    }
}

/// The inode of a `socket:[<inode>]` target, which `/proc/net/*` lists for each socket.
pub fn socket_inode(target: &[u8]) -> Option<u64> {
    std::str::from_utf8(target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
        .ok()?
        .parse()
        .ok()
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
        assert_eq!(socket_inode(b"socket:[12"), None);
    }
}
