//! A test that cannot run here says so where people look, instead of passing silently:
//! tests/run lists every skip in its summary, and under `CI=true` a skip fails the test.
//! Shared by the workspace's test crates as a `#[path]` module.

use std::io::Write;

/// The file tests/run names for skips, one `test: reason` line each.
const SKIPPED_FILE_VAR: &str = "PROCWATCH_SKIPPED_FILE";

/// Records that the running test does not run and why; the caller then returns. Under
/// `CI=true`, where every test must run, it then panics.
pub fn skip(reason: &str) {
    let test = test_name();
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIPPED_FILE_VAR) {
        // One write per line with O_APPEND: lines of tests running in parallel do not mix.
        let line = format!("{test}: {reason}\n");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .unwrap_or_else(|error| panic!("{test}: cannot record the skip in {path:?}: {error}"));
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test} cannot run, and under CI=true every test must: {reason}");
    }
}

/// `<test binary>::<test>`: libtest names each test's thread after the test (with one test
/// thread it runs them on `main`, and only the binary is known); cargo's binaries end in
/// `-<hash>`, which is dropped.
fn test_name() -> String {
    let path = std::env::args().next().unwrap_or_default();
    let file = std::path::Path::new(&path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let binary = match file.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => file,
    };
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("{binary}::{test}"),
        _ => binary,
    }
}
