//! Pure parsers of /proc file contents: bytes in, typed facts out, no I/O.
//!
//! Each parser accepts what real kernels write (old kernels lack some fields, comm may contain
//! spaces and parentheses, command lines may hold invalid UTF-8) and reports malformed input as
//! [`ParseError`] instead of panicking. Where `procfs-core` parses a format as fast and as
//! completely as the scan needs, it does (the agent feeds it the bytes it read itself); the
//! parsers kept here are the ones that `cargo bench --bench parsers` shows to be much faster, or
//! that keep what `procfs-core` leaves out.

pub mod cmdline;
pub mod environ;
pub mod fd;
pub mod maps;
pub mod net;
pub mod passwd;
pub mod stat;
pub mod status;

#[cfg(test)]
mod properties;

/// A /proc file did not have the shape the kernel writes.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Found by one of the agent's own parsers, which says what is wrong.
    #[error("malformed {file}: {detail}")]
    Malformed { file: &'static str, detail: String },
    /// Found by a `procfs-core` parser.
    #[error("malformed {file}")]
    Procfs {
        file: &'static str,
        #[source]
        source: procfs_core::ProcError,
    },
}

impl ParseError {
    pub(crate) fn new(file: &'static str, detail: impl Into<String>) -> Self {
        ParseError::Malformed {
            file,
            detail: detail.into(),
        }
    }

    pub(crate) fn procfs(file: &'static str, source: procfs_core::ProcError) -> Self {
        ParseError::Procfs { file, source }
    }
}
