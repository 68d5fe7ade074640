//! `spec.expect` compiled and judged: [`Rules::compile`] checks what the CRD schema cannot
//! (glob syntax, facts the watch does not collect) and [`Rules::judge`] finds, in one pod's
//! findings, every process or container that breaks a rule.
//!
//! Only facts are judged: a rule about a container that has not reported says nothing, and
//! per-process rules see the processes the agent listed (`report.maxProcesses`, busiest first).

use glob::Pattern;
use k8s_openapi::jiff::Timestamp;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{
    ContainerReport, Expectation, ExpectedFile, ListeningSocket, ProcessInfo, ProcessWatchSpec,
    SeccompMode, SocketProtocol,
};

use super::bootstrap::in_runtime_bootstrap;

/// Applies to every container the watch reports.
const ANY_CONTAINER: &str = "*";

/// The rules of a watch, ready to judge reports.
#[derive(Debug, Default)]
pub struct Rules(Vec<Compiled>);

#[derive(Debug)]
struct Compiled {
    container: String,
    commands: Option<Vec<Pattern>>,
    users: Option<Vec<String>>,
    non_root_except: Option<Vec<Pattern>>,
    max_processes: Option<u32>,
    listening: Option<Vec<Listener>>,
    forbid_capabilities: Option<Vec<String>>,
    no_new_privs: bool,
    seccomp: Option<Vec<SeccompMode>>,
    files: Vec<ExpectedFile>,
}

#[derive(Debug)]
struct Listener {
    protocol: SocketProtocol,
    address: Pattern,
    text: String,
}

/// One thing that breaks a rule, in one container of one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Breach {
    pub container: String,
    /// `commands`, `users`, …: the rule's field name.
    pub rule: &'static str,
    pub pid: Option<i32>,
    pub command: Option<String>,
    pub message: String,
}

impl Rules {
    /// The watch's rules, or every problem found in them, each naming its field.
    pub fn compile(spec: &ProcessWatchSpec) -> Result<Rules, Vec<String>> {
        let mut problems = Vec::new();
        let rules = spec
            .expect
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_one(spec, rule, &format!("spec.expect[{i}]"), &mut problems))
            .collect();
        if problems.is_empty() {
            Ok(Rules(rules))
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The declared sha256 of `path` in containers named `container`: a rule naming the
    /// container wins over one for `*`.
    pub fn declared_sha256(&self, container: &str, path: &str) -> Option<&str> {
        let declared = |wanted: &str| {
            self.0
                .iter()
                .filter(|rule| rule.container == wanted)
                .flat_map(|rule| &rule.files)
                .find(|file| file.path == path)
                .map(|file| file.sha256.as_str())
        };
        declared(container).or_else(|| declared(ANY_CONTAINER))
    }

    /// Everything in `containers` (one pod's, as the watch reports them) that breaks a rule,
    /// sorted.
    /// Judges the containers of a report received at `received_at`.
    pub fn judge(&self, containers: &[ContainerReport], received_at: Timestamp) -> Vec<Breach> {
        let mut breaches: Vec<Breach> = containers
            .iter()
            .filter(|c| !c.name.is_empty() && c.name != AGENT_CONTAINER_NAME)
            .flat_map(|container| {
                self.0
                    .iter()
                    .filter(|rule| {
                        rule.container == ANY_CONTAINER || rule.container == container.name
                    })
                    .flat_map(move |rule| rule.judge(container, received_at))
            })
            .collect();
        breaches.sort();
        breaches.dedup();
        breaches
    }
}

fn compile_one(
    spec: &ProcessWatchSpec,
    rule: &Expectation,
    at: &str,
    problems: &mut Vec<String>,
) -> Compiled {
    let mut globs = |field: &str, items: &Option<Vec<String>>| -> Option<Vec<Pattern>> {
        let items = items.as_ref()?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, text)| match Pattern::new(text) {
                    Ok(pattern) => Some(pattern),
                    Err(error) => {
                        problems.push(format!("{at}.{field}[{i}] {text:?} is not a glob: {error}"));
                        None
                    }
                })
                .collect(),
        )
    };
    let commands = globs("commands", &rule.commands);
    let non_root_except = globs("nonRootExcept", &rule.non_root_except);
    if !spec.containers.is_empty()
        && rule.container != ANY_CONTAINER
        && !spec.containers.contains(&rule.container)
    {
        problems.push(format!(
            "{at}.container {} is not one of spec.containers, so it is never reported",
            rule.container
        ));
    }
    if rule.listening.is_some() && !spec.collect.sockets {
        problems.push(format!(
            "{at}.listening needs collect.sockets: true, which this watch turns off"
        ));
    }
    let listening = rule.listening.as_ref().map(|items| {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, text)| match listener(text) {
                Ok(listener) => Some(listener),
                Err(why) => {
                    problems.push(format!("{at}.listening[{i}] {text:?} {why}"));
                    None
                }
            })
            .collect()
    });
    let files = rule.files.clone().unwrap_or_default();
    for (i, file) in files.iter().enumerate() {
        if !spec.collect.files.contains(&file.path) {
            problems.push(format!(
                "{at}.files[{i}].path {} is not in collect.files, so it is never fingerprinted",
                file.path
            ));
        }
        if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("{at}.files[{i}].sha256 is not 64 hex digits"));
        }
    }
    Compiled {
        container: rule.container.clone(),
        commands,
        users: rule.users.clone(),
        non_root_except,
        max_processes: rule.max_processes,
        listening,
        forbid_capabilities: rule.forbid_capabilities.as_ref().map(|names| {
            names
                .iter()
                .map(|name| name.strip_prefix("CAP_").unwrap_or(name).to_string())
                .collect()
        }),
        no_new_privs: rule.no_new_privs == Some(true),
        seccomp: rule.seccomp.clone(),
        files: files
            .into_iter()
            .map(|file| ExpectedFile {
                sha256: file.sha256.to_ascii_lowercase(),
                ..file
            })
            .collect(),
    }
}

/// `TCP 127.0.0.1:8080`: a protocol, a space and an address glob.
fn listener(text: &str) -> Result<Listener, String> {
    let (protocol, address) = text
        .split_once(' ')
        .ok_or("is not `PROTOCOL ADDRESS`, like `TCP 127.0.0.1:8080`")?;
    let protocol = match protocol {
        "TCP" => SocketProtocol::Tcp,
        "UDP" => SocketProtocol::Udp,
        "Unix" => SocketProtocol::Unix,
        other => return Err(format!("has protocol {other}, not TCP, UDP or Unix")),
    };
    let address = Pattern::new(address.trim())
        .map_err(|error| format!("has an address that is not a glob: {error}"))?;
    Ok(Listener {
        protocol,
        address,
        text: text.to_string(),
    })
}

/// How a listening socket is written in rules and messages.
fn socket_text(socket: &ListeningSocket) -> Option<String> {
    let (protocol, address) = match socket.protocol {
        SocketProtocol::Tcp => ("TCP", socket.address.as_deref()?),
        SocketProtocol::Udp => ("UDP", socket.address.as_deref()?),
        SocketProtocol::Unix => ("Unix", socket.path.as_deref()?),
    };
    Some(format!("{protocol} {address}"))
}

impl Listener {
    fn matches(&self, socket: &ListeningSocket) -> bool {
        let address = match socket.protocol {
            SocketProtocol::Unix => socket.path.as_deref(),
            SocketProtocol::Tcp | SocketProtocol::Udp => socket.address.as_deref(),
        };
        socket.protocol == self.protocol && address.is_some_and(|a| self.address.matches(a))
    }
}

/// `sleep (pid 42)`, or `pid 42` for a process without a name.
fn named(process: &ProcessInfo) -> String {
    if process.command.is_empty() {
        format!("pid {}", process.pid)
    } else {
        format!("{} (pid {})", process.command, process.pid)
    }
}

impl Compiled {
    fn judge(&self, container: &ContainerReport, received_at: Timestamp) -> Vec<Breach> {
        let mut breaches = Vec::new();
        let whole = |rule: &'static str, message: String| Breach {
            container: container.name.clone(),
            rule,
            pid: None,
            command: None,
            message,
        };
        let settled = container
            .processes
            .iter()
            .filter(|p| !in_runtime_bootstrap(p, received_at));
        for process in settled {
            let mut breach = |rule: &'static str, what: String| {
                breaches.push(Breach {
                    container: container.name.clone(),
                    rule,
                    pid: Some(process.pid),
                    command: Some(process.command.clone()).filter(|c| !c.is_empty()),
                    message: format!("{} {what}", named(process)),
                })
            };
            if let Some(commands) = &self.commands
                && !commands.iter().any(|glob| glob.matches(&process.command))
            {
                breach(
                    "commands",
                    format!("is not one of the expected commands {}", list(commands)),
                );
            }
            if let Some(users) = &self.users {
                let uid = process.uid.to_string();
                let allowed = users
                    .iter()
                    .any(|user| Some(user) == process.user.as_ref() || *user == uid);
                if !allowed {
                    let who = process.user.clone().unwrap_or_else(|| format!("uid {uid}"));
                    breach(
                        "users",
                        format!("runs as {who}, not one of {}", users.join(", ")),
                    );
                }
            }
            if let Some(except) = &self.non_root_except
                && process.uid == 0
            {
                let line = if process.args.is_empty() {
                    &process.command
                } else {
                    &process.args
                };
                if !except.iter().any(|glob| glob.matches(line)) {
                    breach("nonRootExcept", "runs as root".to_string());
                }
            }
            if let Some(forbidden) = &self.forbid_capabilities {
                let held: Vec<&str> = process
                    .capabilities
                    .iter()
                    .filter(|cap| forbidden.contains(cap))
                    .map(String::as_str)
                    .collect();
                if !held.is_empty() {
                    breach("forbidCapabilities", format!("has {}", held.join(", ")));
                }
            }
            if self.no_new_privs && !process.no_new_privs {
                breach("noNewPrivs", "runs without no_new_privs".to_string());
            }
            if let (Some(allowed), Some(mode)) = (&self.seccomp, process.seccomp)
                && !allowed.contains(&mode)
            {
                breach("seccomp", format!("runs with seccomp {mode:?}"));
            }
        }
        if let Some(max) = self.max_processes
            && container.process_count > max
        {
            breaches.push(whole(
                "maxProcesses",
                format!("{} processes, more than {max}", container.process_count),
            ));
        }
        if let Some(expected) = &self.listening {
            for socket in &container.listening {
                if !expected.iter().any(|l| l.matches(socket))
                    && let Some(text) = socket_text(socket)
                {
                    breaches.push(Breach {
                        pid: socket.pid,
                        ..whole("listening", format!("unexpected listener {text}"))
                    });
                }
            }
            for listener in expected {
                if !container.listening.iter().any(|s| listener.matches(s)) {
                    breaches.push(whole(
                        "listening",
                        format!("no listener matches {}", listener.text),
                    ));
                }
            }
        }
        for file in &self.files {
            match container.files.iter().find(|f| f.path == file.path) {
                None => breaches.push(whole(
                    "files",
                    format!(
                        "{} was not fingerprinted (missing or unreadable)",
                        file.path
                    ),
                )),
                Some(found) if found.sha256 != file.sha256 => breaches.push(whole(
                    "files",
                    format!(
                        "{} has sha256 {}, not the declared {}",
                        file.path,
                        short(&found.sha256),
                        short(&file.sha256)
                    ),
                )),
                Some(_) => {}
            }
        }
        breaches
    }
}

fn list(globs: &[Pattern]) -> String {
    let names: Vec<&str> = globs.iter().map(Pattern::as_str).collect();
    format!("[{}]", names.join(", "))
}

/// The first 12 hex digits of a digest, enough to tell variants apart in a message.
pub fn short(sha256: &str) -> &str {
    if sha256.is_empty() {
        return "(none: too large to hash)";
    }
    sha256.get(..12).unwrap_or(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_crds::FileFingerprint;

    fn spec(expect: Vec<Expectation>) -> ProcessWatchSpec {
        let mut spec = crate::fixtures::watch("web").spec;
        spec.collect.files = vec!["/etc/nginx/nginx.conf".into()];
        spec.expect = expect;
        spec
    }

    fn rule(container: &str) -> Expectation {
        Expectation {
            container: container.into(),
            ..Expectation::default()
        }
    }

    fn process(pid: i32, command: &str, uid: u32) -> ProcessInfo {
        ProcessInfo {
            pid,
            command: command.into(),
            args: format!("{command}: worker process"),
            uid,
            user: Some(if uid == 0 { "root" } else { "www-data" }.into()),
            ..ProcessInfo::default()
        }
    }

    fn nginx(processes: Vec<ProcessInfo>) -> ContainerReport {
        ContainerReport {
            name: "nginx".into(),
            process_count: u32::try_from(processes.len()).unwrap(),
            processes,
            ..ContainerReport::default()
        }
    }

    /// When the reports the tests judge were received.
    fn received() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn judged(rule: Expectation, containers: &[ContainerReport]) -> Vec<(&'static str, String)> {
        Rules::compile(&spec(vec![rule]))
            .unwrap()
            .judge(containers, received())
            .into_iter()
            .map(|b| (b.rule, b.message))
            .collect()
    }

    #[test]
    fn a_process_runc_still_sets_up_is_judged_once_it_runs_its_command() {
        let started = |seconds_before: i64| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(received().as_second() - seconds_before).unwrap(),
            ))
        };
        let exec = |seconds_before| ProcessInfo {
            started_at: started(seconds_before),
            ..process(23, "runc:[2:INIT]", 0)
        };
        let rule = Expectation {
            commands: Some(vec!["nginx".into()]),
            non_root_except: Some(vec![]),
            ..rule("nginx")
        };
        let container = |p| nginx(vec![process(1, "nginx", 101), p]);
        assert_eq!(judged(rule.clone(), &[container(exec(1))]), []);
        // Named so for longer than runc takes: judged like any other process.
        assert_eq!(judged(rule, &[container(exec(60))]).len(), 2);
    }

    #[test]
    fn commands_are_globs_and_an_empty_list_allows_none() {
        let container = nginx(vec![process(1, "nginx", 0), process(42, "sleep", 0)]);
        let only_nginx = Expectation {
            commands: Some(vec!["ngin?".into()]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(only_nginx, std::slice::from_ref(&container)),
            [(
                "commands",
                "sleep (pid 42) is not one of the expected commands [ngin?]".to_string()
            )]
        );
        let none = Expectation {
            commands: Some(vec![]),
            ..rule("*")
        };
        assert_eq!(judged(none, &[container]).len(), 2);
    }

    #[test]
    fn an_absent_field_is_no_rule() {
        let container = nginx(vec![process(1, "nginx", 0)]);
        assert_eq!(judged(rule("nginx"), &[container]), []);
    }

    #[test]
    fn a_container_that_has_not_reported_breaks_nothing() {
        let strict = Expectation {
            commands: Some(vec![]),
            max_processes: Some(0),
            ..rule("php")
        };
        assert_eq!(judged(strict, &[nginx(vec![process(1, "nginx", 0)])]), []);
        // Nor does the agent's own container, even under `*`.
        let agent = ContainerReport {
            name: AGENT_CONTAINER_NAME.into(),
            ..nginx(vec![process(9, "procwatch-agent", 0)])
        };
        let any = Expectation {
            commands: Some(vec![]),
            ..rule("*")
        };
        assert_eq!(judged(any, &[agent]), []);
    }

    #[test]
    fn users_match_by_name_or_uid() {
        let container = nginx(vec![process(1, "nginx", 0), process(7, "nginx", 33)]);
        let by_uid = Expectation {
            users: Some(vec!["33".into()]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(by_uid, std::slice::from_ref(&container)),
            [(
                "users",
                "nginx (pid 1) runs as root, not one of 33".to_string()
            )]
        );
        let by_name = Expectation {
            users: Some(vec!["root".into(), "www-data".into()]),
            ..rule("nginx")
        };
        assert_eq!(judged(by_name, &[container]), []);
    }

    #[test]
    fn non_root_except_matches_the_command_line() {
        let mut master = process(1, "nginx", 0);
        master.args = "nginx: master process nginx -g daemon off;".into();
        let container = nginx(vec![master, process(8, "sh", 0), process(9, "nginx", 101)]);
        let except_master = Expectation {
            non_root_except: Some(vec!["nginx: master*".into()]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(except_master, &[container]),
            [("nonRootExcept", "sh (pid 8) runs as root".to_string())]
        );
    }

    #[test]
    fn capabilities_no_new_privs_and_seccomp() {
        let mut p = process(5, "nginx", 101);
        p.capabilities = vec!["CHOWN".into(), "NET_RAW".into()];
        p.seccomp = Some(SeccompMode::Disabled);
        let container = nginx(vec![p]);
        let hardened = Expectation {
            forbid_capabilities: Some(vec!["CAP_NET_RAW".into(), "SYS_ADMIN".into()]),
            no_new_privs: Some(true),
            seccomp: Some(vec![SeccompMode::Filter]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(hardened, &[container]),
            [
                (
                    "forbidCapabilities",
                    "nginx (pid 5) has NET_RAW".to_string()
                ),
                (
                    "noNewPrivs",
                    "nginx (pid 5) runs without no_new_privs".to_string()
                ),
                (
                    "seccomp",
                    "nginx (pid 5) runs with seccomp Disabled".to_string()
                ),
            ]
        );
    }

    #[test]
    fn max_processes_counts_every_process_listed_or_not() {
        let mut container = nginx(vec![process(1, "nginx", 0)]);
        container.process_count = 7;
        let at_most_five = Expectation {
            max_processes: Some(5),
            ..rule("nginx")
        };
        assert_eq!(
            judged(at_most_five, &[container]),
            [("maxProcesses", "7 processes, more than 5".to_string())]
        );
    }

    #[test]
    fn listening_is_exactly_these() {
        let socket = |address: &str| ListeningSocket {
            protocol: SocketProtocol::Tcp,
            address: Some(address.into()),
            path: None,
            reachable_at: None,
            pid: Some(1),
        };
        let mut container = nginx(vec![process(1, "nginx", 0)]);
        container.listening = vec![socket("127.0.0.1:18080"), socket("0.0.0.0:22")];
        let only = Expectation {
            listening: Some(vec!["TCP 127.0.0.1:*".into(), "UDP *:53".into()]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(only, &[container.clone()]),
            [
                ("listening", "no listener matches UDP *:53".to_string()),
                (
                    "listening",
                    "unexpected listener TCP 0.0.0.0:22".to_string()
                ),
            ]
        );
        let none = Expectation {
            listening: Some(vec![]),
            ..rule("nginx")
        };
        assert_eq!(judged(none, &[container]).len(), 2);
    }

    #[test]
    fn files_are_compared_with_the_declared_digest() {
        let declared = "d1f0".repeat(16);
        let mut container = nginx(vec![process(1, "nginx", 0)]);
        let pinned = Expectation {
            files: Some(vec![ExpectedFile {
                path: "/etc/nginx/nginx.conf".into(),
                sha256: declared.to_uppercase(),
            }]),
            ..rule("nginx")
        };
        assert_eq!(
            judged(pinned.clone(), std::slice::from_ref(&container)),
            [(
                "files",
                "/etc/nginx/nginx.conf was not fingerprinted (missing or unreadable)".to_string()
            )]
        );
        container.files = vec![FileFingerprint {
            path: "/etc/nginx/nginx.conf".into(),
            size: 10,
            mode: "0644".into(),
            sha256: "ab".repeat(32),
        }];
        assert_eq!(
            judged(pinned.clone(), std::slice::from_ref(&container)),
            [(
                "files",
                "/etc/nginx/nginx.conf has sha256 abababababab, not the declared d1f0d1f0d1f0"
                    .to_string()
            )]
        );
        container.files[0].sha256 = declared.clone();
        assert_eq!(judged(pinned, &[container]), []);
    }

    #[test]
    fn what_the_schema_cannot_check_is_refused_with_the_field() {
        let mut bad = spec(vec![Expectation {
            commands: Some(vec!["[nginx".into()]),
            listening: Some(vec!["SCTP 1.2.3.4:5".into()]),
            files: Some(vec![ExpectedFile {
                path: "/etc/passwd".into(),
                sha256: "0".repeat(64),
            }]),
            ..rule("php")
        }]);
        bad.containers = vec!["nginx".into()];
        bad.collect.sockets = false;
        let problems = Rules::compile(&bad).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("spec.expect[0].commands[0] \"[nginx\" is not a glob"));
        assert!(problems[1].contains("spec.expect[0].container php is not one of spec.containers"));
        assert!(problems[2].contains("spec.expect[0].listening needs collect.sockets"));
        assert!(problems[3].contains("has protocol SCTP"));
        assert!(problems[4].contains("/etc/passwd is not in collect.files"));
    }

    #[test]
    fn a_named_container_declares_over_any() {
        let file = |sha: &str| ExpectedFile {
            path: "/etc/nginx/nginx.conf".into(),
            sha256: sha.repeat(64),
        };
        let rules = Rules::compile(&spec(vec![
            Expectation {
                files: Some(vec![file("a")]),
                ..rule("*")
            },
            Expectation {
                files: Some(vec![file("b")]),
                ..rule("nginx")
            },
        ]))
        .unwrap();
        let declared = |c| {
            rules
                .declared_sha256(c, "/etc/nginx/nginx.conf")
                .map(|s| &s[..1])
        };
        assert_eq!(declared("nginx"), Some("b"));
        assert_eq!(declared("php"), Some("a"));
        assert_eq!(rules.declared_sha256("nginx", "/etc/other"), None);
    }
}
