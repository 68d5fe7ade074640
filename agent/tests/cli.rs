//! The `procwatch-agent snapshot` command as users and scripts run it.

mod common;

use std::process::{Command, Output};

use common::containers::{
    FakeContainer, can_run, cgroup_root, random_hex, random_pod_uid, systemd_cgroup, wait_for,
};
use procwatch_crds::ContainerReport;
use serde::Deserialize;

const AGENT: &str = env!("CARGO_BIN_EXE_procwatch-agent");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    containers: Vec<ContainerReport>,
}

fn agent(args: &[&str]) -> Output {
    Command::new(AGENT).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exit_codes_scripts_can_use() {
    let bad_root = agent(&["snapshot", "--proc-root", "/etc"]);
    assert_eq!(bad_root.status.code(), Some(2));
    assert!(
        text(&bad_root.stderr).contains("/etc is not a proc filesystem"),
        "{}",
        text(&bad_root.stderr)
    );

    let missing_root = agent(&["snapshot", "--proc-root", "/nonexistent"]);
    assert_eq!(missing_root.status.code(), Some(2));

    for bad in [
        &["snapshot", "--format", "xml"][..],
        &["snapshot", "--environment", "all"],
        &["snapshot", "--file", "relative/path"],
        &["snapshot", "--max-processes", "0"],
        &["snapshot", "--interval", "fast"],
        &["bogus"],
    ] {
        let output = agent(bad);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{bad:?}: {}",
            text(&output.stderr)
        );
    }
    let help = agent(&["snapshot", "--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("Exit codes"));

    // `run` without its environment is a usage error that names what is missing.
    let run = Command::new(AGENT).arg("run").env_clear().output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("--report-url"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn table_json_and_yaml() {
    let table = agent(&["snapshot", "--interval", "0"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(table.starts_with("CONTAINER"), "{table}");
    assert!(table.lines().next().unwrap().contains("COMMAND/ARGS"));
    assert!(
        table.contains("procwatch-agent snapshot --interval 0"),
        "{table}"
    );

    // Other tests run agents at the same time: find this one by its pid.
    let child = Command::new(AGENT)
        .args([
            "snapshot",
            "--format",
            "json",
            "--interval",
            "100ms",
            "--environment",
            "redacted",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let json = child.wait_with_output().unwrap();
    assert!(json.status.success());
    let snapshot: Snapshot = serde_json::from_slice(&json.stdout).unwrap();
    let host = snapshot
        .containers
        .iter()
        .find(|c| c.name == "host")
        .expect("a host group");
    let me = host
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("the agent itself");
    assert_eq!(me.command, "procwatch-agent");
    assert_eq!(
        me.args,
        format!("{AGENT} snapshot --format json --interval 100ms --environment redacted")
    );
    assert!(me.open_files.unwrap() >= 3);

    let yaml = agent(&[
        "snapshot",
        "--format",
        "yaml",
        "--interval",
        "0",
        "--max-processes",
        "2",
    ]);
    assert!(yaml.status.success());
    let snapshot: Snapshot = serde_yaml::from_slice(&yaml.stdout).unwrap();
    let host = snapshot
        .containers
        .iter()
        .find(|c| c.name == "host")
        .unwrap();
    assert_eq!(host.processes.len(), 2);
    assert!(host.truncated);
}

#[test]
fn without_ptrace_unreadable_facts_are_named_not_fatal() {
    if !can_run() {
        return;
    }
    // As nobody, without capabilities: root's processes keep their environ to themselves.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args([AGENT, "snapshot", "--format", "json", "--interval", "0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let snapshot: Snapshot = serde_json::from_slice(&output.stdout).unwrap();
    let notes: Vec<&String> = snapshot
        .containers
        .iter()
        .flat_map(|c| c.unreadable.iter())
        .collect();
    assert!(
        notes.iter().any(|note| note.starts_with("environ of pid")
            && note.ends_with(": permission denied (agent has no CAP_SYS_PTRACE)")),
        "{notes:#?}"
    );
}

/// Inside a pod on cgroup v2 (or any private cgroup namespace) the agent sees the other
/// containers' cgroups as relative paths `/../cri-containerd-<id>.scope`.
#[test]
fn inside_a_private_cgroup_namespace_siblings_are_relative_paths() {
    if !can_run() {
        return;
    }
    let pod_uid = random_pod_uid();
    let (web_id, agent_id) = (random_hex(64), random_hex(64));
    let web = FakeContainer::start(
        &systemd_cgroup(&pod_uid, &web_id),
        &web_id,
        "exec sleep 600",
    );
    let web_pid = wait_for(
        "the web container",
        std::time::Duration::from_secs(10),
        || {
            web.pids().into_iter().find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            })
        },
    );
    let agent_cgroup = cgroup_root()
        .unwrap()
        .join(systemd_cgroup(&pod_uid, &agent_id));
    std::fs::create_dir_all(&agent_cgroup).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec unshare --cgroup sh -c 'cat /proc/{web_pid}/cgroup >&2; exec {AGENT} snapshot --format json --interval 0'",
            agent_cgroup.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&agent_cgroup);
    let seen = text(&output.stderr);
    assert!(
        seen.contains(&format!(":/../cri-containerd-{web_id}.scope")),
        "{seen}"
    );
    assert!(output.status.success(), "{seen}");
    let snapshot: Snapshot = serde_json::from_slice(&output.stdout).unwrap();
    let group = snapshot
        .containers
        .iter()
        .find(|c| c.container_id.as_deref() == Some(format!("containerd://{web_id}").as_str()))
        .expect("the web container's group");
    assert_eq!(group.name, format!("containerd-{}", &web_id[..12]));
    assert!(group.processes.iter().any(|p| p.pid == web_pid));
}
