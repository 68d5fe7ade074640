//! `/etc/passwd` of a container, to name the users its processes run as.

use std::collections::HashMap;

/// User names longer than this (Linux tools allow 32) are cut: a container's `/etc/passwd`
/// must not make every process of its report large.
pub const MAX_USER_NAME_BYTES: usize = 64;

/// The users of one `/etc/passwd`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Users {
    /// uid → user name; the first entry wins, as `getpwuid` does.
    pub names: HashMap<u32, String>,
    /// Names cut to [`MAX_USER_NAME_BYTES`].
    pub cut: usize,
}

pub fn parse_passwd(text: &[u8]) -> Users {
    let mut users = Users::default();
    for line in String::from_utf8_lossy(text).lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_password), Some(uid)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if let (false, Ok(uid)) = (name.is_empty(), uid.parse::<u32>())
            && let std::collections::hash_map::Entry::Vacant(entry) = users.names.entry(uid)
        {
            let mut end = name.len().min(MAX_USER_NAME_BYTES);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            users.cut += usize::from(end < name.len());
            entry.insert(name[..end].to_string());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_uid() {
        let users = parse_passwd(
            b"root:x:0:0:root:/root:/bin/bash\n# comment\nnginx:x:101:101:nginx user:/nonexistent:/usr/sbin/nologin\n\
toor:x:0:0::/:/bin/sh\nbroken line\nbad:x:notanumber:1::/:\n:x:5:5::/:\n",
        );
        assert_eq!(users.names.len(), 2);
        assert_eq!(users.names[&0], "root");
        assert_eq!(users.names[&101], "nginx");
        assert_eq!(users.cut, 0);
    }

    #[test]
    fn long_names_are_cut_and_counted() {
        let long = "é".repeat(1024 * 512);
        let users = parse_passwd(format!("{long}:x:7:7::/:\n").as_bytes());
        assert_eq!(users.names[&7], "é".repeat(MAX_USER_NAME_BYTES / 2));
        assert_eq!(users.cut, 1);
    }
}
