//! The procwatch agent: scans a /proc root and reports, per container, what runs there.
//!
//! - [`parse`]: pure parsers of /proc file contents;
//! - [`attribution`]: pure container attribution (cgroup paths, mount namespaces, pod names);
//! - [`procfs_read`]: the I/O edge reading one proc root;
//! - [`scan`]: the scanner, from a proc root to [`procwatch_crds::ContainerReport`]s;
//! - [`fingerprint`]: streamed file fingerprints;
//! - [`table`]: the snapshot's human-readable table;
//! - [`reporter`]: the `run` loop's HTTPS client, backoff and schedule.

pub mod attribution;
pub mod fingerprint;
pub mod parse;
pub mod procfs_read;
pub mod reporter;
pub mod scan;
pub mod table;

pub use scan::{Scan, ScanOptions, Scanner};
