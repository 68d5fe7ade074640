//! `/proc/<pid>/maps`: the distinct files mapped executable (the program and its libraries).

use std::collections::BTreeSet;

use procfs_core::FromBufRead;
use procfs_core::process::{MMPermissions, MMapPath, MemoryMaps};

use super::ParseError;

/// Adds to `libraries` the path of every file-backed mapping with execute permission.
/// Pseudo-mappings (`[vdso]`, anonymous memory) are skipped; ` (deleted)` is dropped so an
/// upgraded library still names its path. A path that is not UTF-8 has its odd bytes replaced.
pub fn collect_executable_mappings(
    text: &[u8],
    libraries: &mut BTreeSet<String>,
) -> Result<(), ParseError> {
    let text = String::from_utf8_lossy(text);
    let maps = MemoryMaps::from_buf_read(text.as_bytes())
        .map_err(|source| ParseError::procfs("maps", source))?;
    for map in maps {
        let MMapPath::Path(path) = &map.pathname else {
            continue;
        };
        // Valid UTF-8: it was made so above.
        let path = path.to_string_lossy();
        // `/memfd:name` is anonymous memory with a name, not a file.
        if !map.perms.contains(MMPermissions::EXECUTE) || path.starts_with("/memfd:") {
            continue;
        }
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
        if !libraries.contains(path) {
            libraries.insert(path.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_file_mappings_only() {
        let maps = b"55d0c0a00000-55d0c0a2c000 r--p 00000000 08:01 131 /usr/sbin/nginx\n\
55d0c0a2c000-55d0c0b10000 r-xp 0002c000 08:01 131 /usr/sbin/nginx\n\
7f1c2a000000-7f1c2a028000 r-xp 00028000 08:01 200 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
7f1c2b000000-7f1c2b100000 r-xp 00000000 08:01 201 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n\
7f1c2c000000-7f1c2c001000 r-xp 00000000 08:01 202 /opt/my app/lib plugin.so\n\
7f1c2d000000-7f1c2d021000 rw-p 00000000 00:00 0 \n\
7ffd1a3f0000-7ffd1a3f2000 r-xp 00000000 00:00 0                          [vdso]\n\
7f1c2e000000-7f1c2e001000 rw-p 00000000 08:01 203 /usr/lib/locale/C.utf8/LC_CTYPE\n\
7f1c2f000000-7f1c2f001000 r-xs 00000000 00:01 204 /memfd:sealed-91173221a7ea (deleted)\n";
        let mut libraries = BTreeSet::new();
        collect_executable_mappings(maps, &mut libraries).unwrap();
        assert_eq!(
            libraries.into_iter().collect::<Vec<_>>(),
            [
                "/opt/my app/lib plugin.so",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/usr/sbin/nginx"
            ]
        );
    }

    #[test]
    fn a_damaged_line_is_an_error() {
        let mut libraries = BTreeSet::new();
        let error =
            collect_executable_mappings(b"zz-zz r-xp 0 08:01 1 /lib/x.so\n", &mut libraries)
                .unwrap_err();
        assert_eq!(error.to_string(), "malformed maps");
        assert!(std::error::Error::source(&error).is_some());
    }
}
