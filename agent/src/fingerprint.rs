//! File fingerprints: size, permission bits and SHA-256, streamed so the content is never held.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;

use procwatch_crds::FileFingerprint;
use sha2::{Digest, Sha256};

const CHUNK: usize = 64 * 1024;

/// Fingerprints an open regular file, reporting it under `path`.
pub fn fingerprint(path: &str, file: File) -> io::Result<FileFingerprint> {
    let metadata = file.metadata()?;
    let mut hasher = Sha256::new();
    // io::copy reads straight into the BufReader's buffer: CHUNK bytes per read.
    let size = io::copy(&mut BufReader::with_capacity(CHUNK, file), &mut hasher)?;
    Ok(FileFingerprint {
        path: path.to_string(),
        // What was hashed, even if the file grew or shrank since `metadata`.
        size,
        mode: format!("{:04o}", metadata.permissions().mode() & 0o7777),
        sha256: hex(&hasher.finalize()),
    })
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
        let print = fingerprint("/big", File::open(&path).unwrap()).unwrap();
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
        let print = fingerprint("/empty", File::open(&path).unwrap()).unwrap();
        assert_eq!(
            print.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
