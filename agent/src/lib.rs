//! The procwatch agent: scans a /proc root and reports per-container findings.
