//! Pure parsers of /proc file contents: bytes in, typed facts out, no I/O.
//!
//! Each parser accepts what real kernels write (old kernels lack some fields, comm may contain
//! spaces and parentheses, command lines may hold invalid UTF-8) and reports malformed input as
//! [`ParseError`] instead of panicking.

pub mod cmdline;
pub mod environ;
pub mod fd;
pub mod maps;
pub mod net;
pub mod passwd;
pub mod stat;
pub mod status;

/// A /proc file did not have the shape the kernel writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {file}: {detail}")]
pub struct ParseError {
    pub file: &'static str,
    pub detail: String,
}

impl ParseError {
    pub(crate) fn new(file: &'static str, detail: impl Into<String>) -> Self {
        ParseError {
            file,
            detail: detail.into(),
        }
    }
}
