//! `/proc/<pid>/environ` (`NAME=value` entries separated by NULs), filtered by the watch's
//! environment policy so secret values never leave the agent.

use procwatch_crds::EnvironmentPolicy;

/// At most this many variables per process are reported.
pub const MAX_VARIABLES: usize = 128;
/// Values longer than this are cut and end with `…`.
pub const MAX_VALUE_CHARS: usize = 256;
/// What replaces a masked value.
pub const MASK: &str = "<redacted>";

/// Words that make a variable name look secret, matched anywhere in the upper-cased name.
const SECRET_WORDS: [&str; 14] = [
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
    "SESSION",
    "COOKIE",
    "SALT",
    "SIGNATURE",
];

/// The environment as the policy allows, and how many variables were left out to stay within
/// [`MAX_VARIABLES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub entries: Vec<String>,
    pub left_out: usize,
}

pub fn parse_environ(raw: &[u8], policy: EnvironmentPolicy) -> Environment {
    if policy == EnvironmentPolicy::None {
        return Environment::default();
    }
    let mut environment = Environment::default();
    for entry in raw.split(|&b| b == 0).filter(|entry| !entry.is_empty()) {
        // Without `=` it is no variable: typically the end of a process title written over the
        // environment (nginx's `nginx: master process …` reaches into it), which is cmdline
        // text, not a name.
        if !entry.contains(&b'=') {
            continue;
        }
        if environment.entries.len() == MAX_VARIABLES {
            environment.left_out += 1;
            continue;
        }
        let entry = String::from_utf8_lossy(entry);
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        environment.entries.push(match policy {
            EnvironmentPolicy::Names | EnvironmentPolicy::None => name.to_string(),
            EnvironmentPolicy::Redacted if looks_secret(name) || has_credentials(value) => {
                format!("{name}={MASK}")
            }
            EnvironmentPolicy::Redacted => format!("{name}={}", bounded(value)),
        });
    }
    environment.entries.shrink_to_fit();
    environment
}

/// Whether a variable's name suggests its value is a secret. `PWD` and `OLDPWD` are working
/// directories; `DB_PWD` and the like are passwords.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|word| upper.contains(word))
        || (upper.ends_with("PWD") && upper != "PWD" && upper != "OLDPWD")
}

/// A URL with a password in it (`postgres://user:pw@db/`), whatever the variable is called.
fn has_credentials(value: &str) -> bool {
    value.split_once("://").is_some_and(|(_, rest)| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(user_info, _)| user_info.contains(':'))
    })
}

fn bounded(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVIRON: &[u8] = b"PATH=/usr/bin:/bin\0NGINX_VERSION=1.25.3\0DB_PASSWORD=hunter2\0\
API_KEY=abc\0GITHUB_TOKEN=ghp_x\0PWD=/srv\0DB_PWD=pw\0DATABASE_URL=postgres://app:s3cret@db:5432/shop\0\
PLAIN_URL=https://example.org/a:b@c\0EMPTY=\0NOVALUE\0";

    #[test]
    fn none_reports_nothing() {
        assert_eq!(
            parse_environ(ENVIRON, EnvironmentPolicy::None),
            Environment::default()
        );
    }

    #[test]
    fn names_only() {
        let env = parse_environ(ENVIRON, EnvironmentPolicy::Names);
        assert_eq!(
            env.entries,
            [
                "PATH",
                "NGINX_VERSION",
                "DB_PASSWORD",
                "API_KEY",
                "GITHUB_TOKEN",
                "PWD",
                "DB_PWD",
                "DATABASE_URL",
                "PLAIN_URL",
                "EMPTY"
            ]
        );
        assert_eq!(env.left_out, 0);
    }

    #[test]
    fn redacted_masks_secret_names_and_urls_with_passwords() {
        let env = parse_environ(ENVIRON, EnvironmentPolicy::Redacted);
        assert_eq!(
            env.entries,
            [
                "PATH=/usr/bin:/bin",
                "NGINX_VERSION=1.25.3",
                "DB_PASSWORD=<redacted>",
                "API_KEY=<redacted>",
                "GITHUB_TOKEN=<redacted>",
                "PWD=/srv",
                "DB_PWD=<redacted>",
                "DATABASE_URL=<redacted>",
                "PLAIN_URL=https://example.org/a:b@c",
                "EMPTY="
            ]
        );
        let joined = env.entries.join(" ");
        for secret in ["hunter2", "abc", "ghp_x", "s3cret"] {
            assert!(!joined.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn secret_looking_names() {
        for name in [
            "password",
            "MYSQL_ROOT_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "vault_token",
            "SSH_AUTH_SOCK",
            "TLS_PRIVATE_KEY",
            "CLIENT_CERT",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SMTP_PASSWD",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "PWD", "OLDPWD", "HOSTNAME", "LANG"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn bounded_count_and_length() {
        let mut raw = Vec::new();
        for i in 0..MAX_VARIABLES + 5 {
            raw.extend_from_slice(
                format!("V{i}={}\0", "x".repeat(MAX_VALUE_CHARS + 10)).as_bytes(),
            );
        }
        let env = parse_environ(&raw, EnvironmentPolicy::Redacted);
        assert_eq!(env.entries.len(), MAX_VARIABLES);
        assert_eq!(env.left_out, 5);
        assert_eq!(
            env.entries[0],
            format!("V0={}…", "x".repeat(MAX_VALUE_CHARS))
        );
    }

    #[test]
    fn a_process_title_over_the_environment_is_no_variable() {
        // /proc/<pid>/environ of an nginx master: its title ran past argv into the environment.
        let raw = b"aster process nginx\0 master process nginx\0\0HOME=/\0";
        for policy in [EnvironmentPolicy::Names, EnvironmentPolicy::Redacted] {
            let env = parse_environ(raw, policy);
            assert_eq!(env.entries.len(), 1, "{env:?}");
            assert!(env.entries[0].starts_with("HOME"), "{env:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let env = parse_environ(b"N\xffAME=v\xfe\0", EnvironmentPolicy::Redacted);
        assert_eq!(env.entries, ["N\u{fffd}AME=v\u{fffd}"]);
    }
}
