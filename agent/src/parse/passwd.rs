//! `/etc/passwd` of a container, to name the users its processes run as.

use std::collections::HashMap;

/// uid → user name; the first entry wins, as `getpwuid` does.
pub fn parse_passwd(text: &[u8]) -> HashMap<u32, String> {
    let mut users = HashMap::new();
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
        if let (false, Ok(uid)) = (name.is_empty(), uid.parse::<u32>()) {
            users.entry(uid).or_insert_with(|| name.to_string());
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
        assert_eq!(users.len(), 2);
        assert_eq!(users[&0], "root");
        assert_eq!(users[&101], "nginx");
    }
}
