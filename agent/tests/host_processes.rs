//! The scanner on real processes of this machine (as root): fake pod containers in their own
//! mount and PID namespaces and kubepods cgroups, their sockets and files.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::containers::{
    FakeContainer, can_run, cgroupfs_cgroup, random_hex, random_pod_uid, systemd_cgroup, wait_for,
};
use procwatch_agent::{Scan, ScanOptions, Scanner};
use procwatch_crds::report::ContainerIdentity;
use procwatch_crds::{ContainerReport, SocketProtocol};
use sha2::{Digest, Sha256};

const CONFIG: &str = "listen 8080;\n";

fn find<'a>(scan: &'a Scan, name: &str) -> Option<&'a ContainerReport> {
    scan.containers.iter().find(|c| c.name == name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn pod_containers_attributed_with_sockets_reachable_and_files_fingerprinted() {
    if !can_run() {
        return;
    }
    let workdir = tempfile::tempdir().unwrap();
    let private = workdir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let pause = workdir.path().join("pause");
    std::fs::copy("/bin/sleep", &pause).unwrap();
    let port = free_port();

    let pod_uid = random_pod_uid();
    let (web_id, sidecar_id, sandbox_id) = (random_hex(64), random_hex(64), random_hex(64));
    let _sandbox = FakeContainer::start(
        &systemd_cgroup(&pod_uid, &sandbox_id),
        &sandbox_id,
        &format!("exec {} 600", pause.display()),
    );
    // The web container mounts a private tmpfs: its socket and config exist only in its own
    // mount namespace, never on the host's path.
    let dir = private.display();
    let _web = FakeContainer::start(
        &systemd_cgroup(&pod_uid, &web_id),
        &web_id,
        &format!(
            "mount -t tmpfs tmpfs {dir} && printf '{}' > {dir}/app.conf && \
             (socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork SYSTEM:'echo tcp-pong' &) && \
             exec socat UNIX-LISTEN:{dir}/app.sock,fork SYSTEM:'echo unix-pong'",
            CONFIG.escape_default()
        ),
    );
    let _sidecar = FakeContainer::start(
        &cgroupfs_cgroup(&pod_uid, &sidecar_id),
        &sidecar_id,
        "exec sleep 600",
    );

    let statuses = vec![
        ContainerIdentity {
            name: "web".into(),
            container_id: format!("containerd://{web_id}"),
        },
        ContainerIdentity {
            name: "sidecar".into(),
            container_id: format!("containerd://{sidecar_id}"),
        },
    ];
    let config_path = format!("{dir}/app.conf");
    let options = ScanOptions {
        files: vec![config_path.clone()],
        max_processes: usize::MAX,
        ..ScanOptions::default()
    };
    let mut scanner = Scanner::new("/proc").unwrap();
    let scan = wait_for(
        "the web container's listeners",
        Duration::from_secs(15),
        || {
            let scan = scanner.scan(&options, Some(&statuses)).unwrap();
            let ready = find(&scan, "web").is_some_and(|web| web.listening.len() == 2)
                && find(&scan, "sidecar")
                    .is_some_and(|s| s.processes.iter().any(|p| p.command == "sleep"));
            ready.then_some(scan)
        },
    );

    let web = find(&scan, "web").unwrap();
    assert_eq!(
        web.container_id.as_deref(),
        Some(format!("containerd://{web_id}").as_str())
    );
    let commands: Vec<&str> = web.processes.iter().map(|p| p.command.as_str()).collect();
    assert!(
        commands
            .iter()
            .all(|c| ["unshare", "socat", "sh"].contains(c)),
        "{commands:?}"
    );
    assert!(
        commands.iter().filter(|c| **c == "socat").count() >= 2,
        "{commands:?}"
    );
    let web_pids: Vec<i32> = web.processes.iter().map(|p| p.pid).collect();

    let tcp = web
        .listening
        .iter()
        .find(|l| l.protocol == SocketProtocol::Tcp)
        .unwrap();
    assert_eq!(tcp.address, Some(format!("127.0.0.1:{port}")));
    assert!(web_pids.contains(&tcp.pid.unwrap()));
    let mut reply = String::new();
    std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert_eq!(reply, "tcp-pong\n");

    let unix = web
        .listening
        .iter()
        .find(|l| l.protocol == SocketProtocol::Unix)
        .unwrap();
    let socket_path = format!("{dir}/app.sock");
    assert_eq!(unix.path.as_deref(), Some(socket_path.as_str()));
    let owner = unix.pid.unwrap();
    assert!(web_pids.contains(&owner));
    let reachable_at = unix.reachable_at.clone().unwrap();
    assert_eq!(reachable_at, format!("/proc/{owner}/root{socket_path}"));
    // Not on the host's own path (the tmpfs is private), but through the owner's root.
    assert!(!std::path::Path::new(&socket_path).exists());
    let mut stream = UnixStream::connect(&reachable_at).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "unix-pong\n");

    assert!(!std::path::Path::new(&config_path).exists());
    assert_eq!(web.files.len(), 1, "{:?}", web.unreadable);
    let print = &web.files[0];
    assert_eq!(print.path, config_path);
    assert_eq!(print.size, CONFIG.len() as u64);
    let expected: String = Sha256::digest(CONFIG)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(print.sha256, expected);

    let sidecar = find(&scan, "sidecar").unwrap();
    assert_eq!(
        sidecar
            .processes
            .iter()
            .filter(|p| p.command == "sleep")
            .count(),
        1
    );
    assert!(
        scan.containers
            .iter()
            .all(|c| c.processes.iter().all(|p| p.command != "pause")),
        "the pause process belongs to no container"
    );
    // The test process's own (host) namespace is the agent's "container": left out.
    let own_pid = std::process::id() as i32;
    assert!(
        scan.containers
            .iter()
            .all(|c| c.processes.iter().all(|p| p.pid != own_pid))
    );
}

#[test]
fn processes_coming_and_going_never_fail_a_scan() {
    // Short-lived processes keep exiting while the scanner reads them.
    let churn = std::process::Command::new("sh")
        .arg("-c")
        .arg("for i in $(seq 1 400); do /bin/true & done; wait")
        .spawn()
        .unwrap();
    let mut scanner = Scanner::new("/proc").unwrap();
    let options = ScanOptions {
        max_processes: usize::MAX,
        ..ScanOptions::default()
    };
    let mut total_vanished = 0;
    for _ in 0..20 {
        let scan = scanner.scan(&options, None).unwrap();
        assert!(scan.containers.iter().any(|c| c.process_count > 0));
        total_vanished += scan.vanished;
    }
    let mut churn = churn;
    churn.wait().unwrap();
    eprintln!("{total_vanished} processes vanished mid-scan across 20 scans");
}
