//! File fingerprints: size, permission bits and SHA-256, streamed so the content is never held,
//! and read only up to a size limit: a sparse terabyte costs its owner nothing.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;

use procwatch_crds::FileFingerprint;
use sha2::{Digest, Sha256};

const CHUNK: usize = 64 * 1024;

/// Fingerprints an open regular file, reporting it under `path`. A file larger than
/// `max_bytes` (when opened, or grown past it while read) has an empty `sha256`.
pub fn fingerprint(path: &str, file: File, max_bytes: u64) -> io::Result<FileFingerprint> {
    let metadata = file.metadata()?;
    let mut print = FileFingerprint {
        path: path.to_string(),
        size: metadata.len(),
        mode: format!("{:04o}", metadata.permissions().mode() & 0o7777),
        sha256: String::new(),
    };
    if print.size > max_bytes {
        return Ok(print);
    }
    let mut hasher = Sha256::new();
    // io::copy reads straight into the BufReader's buffer: CHUNK bytes per read; one byte past
    // the limit tells a file that grew.
    let mut reader = BufReader::with_capacity(CHUNK, file).take(max_bytes.saturating_add(1));
    let hashed = io::copy(&mut reader, &mut hasher)?;
    if hashed <= max_bytes {
        // What was hashed, even if the file grew or shrank since `metadata`.
        print.size = hashed;
        print.sha256 = hex(&hasher.finalize());
    }
    Ok(print)
}

/// `64 MiB`, `1 KiB`, `1000 bytes`: a size limit as notes say it.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} bytes"),
            |(unit, name)| format!("{} {name}", bytes / unit),
        )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn size_mode_and_sha256_of_a_file_larger_than_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![b'a'; CHUNK * 2 + 5]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let print = fingerprint("/big", File::open(&path).unwrap(), u64::MAX).unwrap();
        assert_eq!(print.path, "/big");
        assert_eq!(print.size, (CHUNK * 2 + 5) as u64);
        assert_eq!(print.mode, "0640");
        assert_eq!(
            print.sha256,
            hex(&Sha256::digest(vec![b'a'; CHUNK * 2 + 5]))
        );
    }

    #[test]
    fn known_digest_of_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        File::create(&path).unwrap();
        let print = fingerprint("/empty", File::open(&path).unwrap(), 0).unwrap();
        assert_eq!(
            print.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_file_past_the_limit_has_size_and_mode_only_and_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        // A terabyte that takes no disk: reading it would take hours.
        File::create(&path).unwrap().set_len(1 << 40).unwrap();
        let started = std::time::Instant::now();
        let print = fingerprint("/sparse", File::open(&path).unwrap(), 64 << 20).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(print.size, 1 << 40);
        assert_eq!(print.sha256, "");
        // At the limit exactly: hashed.
        std::fs::write(&path, b"abcd").unwrap();
        let print = fingerprint("/sparse", File::open(&path).unwrap(), 4).unwrap();
        assert_eq!(print.sha256, hex(&Sha256::digest(b"abcd")));
    }

    #[test]
    fn limits_in_the_largest_whole_unit() {
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text(1 << 30), "1 GiB");
        assert_eq!(size_text(1536), "1536 bytes");
    }
}
