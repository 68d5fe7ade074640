//! The scanner on recorded /proc fixtures: directories laid out like /proc.

mod common;

use common::{BOOT_TIME, FakeProc, FakeProcess};
use procwatch_agent::{Scan, ScanOptions, Scanner};
use procwatch_crds::report::ContainerIdentity;
use procwatch_crds::{ContainerReport, EnvironmentPolicy, ProcessState, SocketProtocol};

const NGINX_ID: &str = "3f2a9c1b7e0d4c5a8b9e1f2d3c4b5a6978675645342312019f8e7d6c5b4a3921";
const FLUX_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SANDBOX_ID: &str = "5555555555555555555555555555555555555555555555555555555555555555";

fn all() -> ScanOptions {
    ScanOptions {
        max_processes: usize::MAX,
        ..ScanOptions::default()
    }
}

fn container<'a>(containers: &'a [ContainerReport], name: &str) -> &'a ContainerReport {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no container {name} in {:?}",
                containers.iter().map(|c| &c.name).collect::<Vec<_>>()
            )
        })
}

/// A shared-PID pod on cgroup v2 seen by the agent (pid 40): pause, nginx master and worker,
/// a flux broker with a unix socket, and the agent itself.
fn pod() -> FakeProc {
    let proc = FakeProc::new(40);
    let mut pause = FakeProcess::new(1, "pause", b"/pause\0");
    pause.cgroup = format!("0::/../cri-containerd-{SANDBOX_ID}.scope\n");
    pause.mount_namespace = Some(10);
    proc.add(&pause);

    let mut master = FakeProcess::new(
        7,
        "nginx",
        b"nginx: master process nginx -g daemon off;\0\0\0",
    );
    master.cgroup = format!("0::/../cri-containerd-{NGINX_ID}.scope\n");
    master.mount_namespace = Some(20);
    master.fds = vec![
        "/dev/null".into(),
        "socket:[31337]".into(),
        "pipe:[5]".into(),
        "/var/log/nginx/access.log".into(),
    ];
    master.exe = Some("/usr/sbin/nginx".into());
    master.environ = b"PATH=/usr/bin\0NGINX_VERSION=1.25.3\0DB_PASSWORD=hunter2\0".to_vec();
    master.cap_eff = "00000000a80425fb".into();
    proc.add(&master);
    proc.write(
        7,
        "net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0\n",
    );
    proc.write(
        7,
        "net/unix",
        "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 20001 /tmp/flux-x/local-1\n",
    );

    let mut worker = FakeProcess::new(8, "nginx", b"nginx: worker process\0");
    worker.ppid = 7;
    worker.uid = 101;
    worker.utime = 500;
    worker.rss_pages = 300;
    // A worker's cgroup seen from a v1 hierarchy names nothing: it joins by mount namespace.
    worker.cgroup = "0::/\n".into();
    worker.mount_namespace = Some(20);
    worker.fds = vec!["socket:[31337]".into(), "anon_inode:[eventpoll]".into()];
    proc.add(&worker);
    for pid in [7, 8] {
        proc.write(
            pid,
            "root/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101::/:/sbin/nologin\n",
        );
        proc.write(pid, "root/etc/nginx/nginx.conf", "events {}\n");
    }

    let mut broker = FakeProcess::new(19, "flux-broker", b"flux-broker\0--rank=0\0");
    broker.cgroup = format!("0::/../cri-containerd-{FLUX_ID}.scope\n");
    broker.mount_namespace = Some(30);
    broker.fds = vec!["socket:[20001]".into()];
    proc.add(&broker);

    let mut agent = FakeProcess::new(40, "procwatch-agent", b"procwatch-agent\0run\0");
    agent.mount_namespace = Some(40);
    proc.add(&agent);
    // One network namespace for the whole pod, so every process shows the same tables.
    for table in ["net/tcp", "net/unix"] {
        let content = std::fs::read(proc.pid_dir(7).join(table)).unwrap();
        proc.write_all(table, content);
    }
    proc
}

fn pod_statuses() -> Vec<ContainerIdentity> {
    vec![
        ContainerIdentity {
            name: "nginx".into(),
            container_id: format!("containerd://{NGINX_ID}"),
        },
        ContainerIdentity {
            name: "flux".into(),
            container_id: format!("containerd://{FLUX_ID}"),
        },
        ContainerIdentity {
            name: "procwatch-agent".into(),
            container_id: format!("containerd://{}", "b".repeat(64)),
        },
    ]
}

#[test]
fn a_pod_grouped_by_container_with_processes_sockets_and_files() {
    let proc = pod();
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let options = ScanOptions {
        files: vec!["/etc/nginx/nginx.conf".into(), "/etc/missing.conf".into()],
        environment: EnvironmentPolicy::Redacted,
        ..all()
    };
    let statuses = pod_statuses();
    let scan = scanner.scan(&options, Some(&statuses)).unwrap();
    assert_eq!(scan.vanished, 0);
    let names: Vec<&str> = scan.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["flux", "nginx"],
        "pause and the agent belong to no reported container"
    );

    let nginx = container(&scan.containers, "nginx");
    assert_eq!(
        nginx.container_id.as_deref(),
        Some(format!("containerd://{NGINX_ID}").as_str())
    );
    assert_eq!(nginx.process_count, 2);
    // Busiest first: the worker has more memory (no CPU sample yet).
    let pids: Vec<i32> = nginx.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [8, 7]);
    let master = &nginx.processes[1];
    assert_eq!(master.args, "nginx: master process nginx -g daemon off;");
    assert_eq!(master.command, "nginx");
    assert_eq!(master.user.as_deref(), Some("root"));
    assert_eq!(nginx.processes[0].user.as_deref(), Some("nginx"));
    assert_eq!(master.state, ProcessState::Sleeping);
    assert_eq!(master.cpu_time_millis, 150);
    assert_eq!(master.open_files, Some(4));
    assert_eq!(
        master
            .open_file_kinds
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("device", 1), ("file", 1), ("pipe", 1), ("socket", 1)]
    );
    assert_eq!(master.capabilities.len(), 14);
    assert_eq!(
        master.environment,
        [
            "PATH=/usr/bin",
            "NGINX_VERSION=1.25.3",
            "DB_PASSWORD=<redacted>"
        ]
    );
    assert_eq!(master.exe.as_deref(), Some("/usr/sbin/nginx"));
    assert_eq!(master.cwd.as_deref(), Some("/"));
    let started = master.started_at.as_ref().unwrap().0.as_second();
    assert_eq!(started, (BOOT_TIME + 1000 / 100) as i64);

    // The listener is held by master and worker; the lowest pid owns it.
    assert_eq!(nginx.listening.len(), 1);
    assert_eq!(nginx.listening[0].protocol, SocketProtocol::Tcp);
    assert_eq!(nginx.listening[0].address.as_deref(), Some("0.0.0.0:80"));
    assert_eq!(nginx.listening[0].pid, Some(7));

    assert_eq!(nginx.files.len(), 1);
    assert_eq!(nginx.files[0].path, "/etc/nginx/nginx.conf");
    assert_eq!(nginx.files[0].size, 10);
    assert!(
        nginx
            .unreadable
            .contains(&"file /etc/missing.conf: not found".to_string()),
        "{:?}",
        nginx.unreadable
    );

    let flux = container(&scan.containers, "flux");
    assert_eq!(flux.listening.len(), 1);
    let unix = &flux.listening[0];
    assert_eq!(unix.protocol, SocketProtocol::Unix);
    assert_eq!(unix.path.as_deref(), Some("/tmp/flux-x/local-1"));
    assert_eq!(unix.pid, Some(19));
    assert_eq!(
        unix.reachable_at.as_deref(),
        Some(format!("{}/19/root/tmp/flux-x/local-1", proc.path().display()).as_str())
    );
}

#[test]
fn max_processes_keeps_the_busiest_and_marks_truncation() {
    let proc = pod();
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let options = ScanOptions {
        max_processes: 1,
        ..ScanOptions::default()
    };
    let statuses = pod_statuses();
    let scan = scanner.scan(&options, Some(&statuses)).unwrap();
    let nginx = container(&scan.containers, "nginx");
    assert_eq!(nginx.process_count, 2);
    assert_eq!(nginx.processes.len(), 1);
    assert_eq!(nginx.processes[0].pid, 8);
    assert!(nginx.truncated);
    // The totals cover the unlisted master too: 300 + 100 pages of RSS.
    let page_size = procwatch_agent::procfs_read::page_size();
    assert_eq!(nginx.processes[0].memory_bytes, 300 * page_size);
    assert_eq!(nginx.memory_bytes, 400 * page_size);
    assert_eq!(
        nginx.cpu_millicores, 0,
        "no CPU sample before the first scan"
    );
    // The listener's lowest-pid holder (7) was not listed; the worker that was holds it.
    assert_eq!(nginx.listening[0].pid, Some(8));
    assert!(!container(&scan.containers, "flux").truncated);
}

#[test]
fn details_read_in_the_first_pass_or_the_second_are_the_same() {
    let proc = pod();
    let statuses = pod_statuses();
    let options = |max_processes| ScanOptions {
        files: vec!["/etc/nginx/nginx.conf".into()],
        environment: EnvironmentPolicy::Redacted,
        libraries: true,
        max_processes,
        ..ScanOptions::default()
    };
    // Every process will be listed: one pass.
    let one_pass = Scanner::new(proc.path())
        .unwrap()
        .scan(&options(usize::MAX), Some(&statuses))
        .unwrap();
    // Fewer than the processes of the pod, more than any container has: two passes, the
    // same processes listed.
    let two_passes = Scanner::new(proc.path())
        .unwrap()
        .scan(&options(2), Some(&statuses))
        .unwrap();
    assert_eq!(one_pass.containers, two_passes.containers);
    assert_eq!(container(&one_pass.containers, "nginx").processes.len(), 2);
}

#[test]
fn collection_switched_off_reads_nothing_of_it() {
    let proc = pod();
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let options = ScanOptions {
        environment: EnvironmentPolicy::None,
        open_files: false,
        sockets: false,
        paths: false,
        ..all()
    };
    let statuses = pod_statuses();
    let scan = scanner.scan(&options, Some(&statuses)).unwrap();
    let nginx = container(&scan.containers, "nginx");
    assert!(nginx.listening.is_empty());
    for process in &nginx.processes {
        assert_eq!(
            (process.open_files, &process.exe, &process.cwd),
            (None, &None, &None)
        );
        assert!(process.environment.is_empty() && process.open_file_kinds.is_empty());
        assert!(!process.args.is_empty() && process.user.is_some());
    }
}

/// Scans the pod 100 ms after a CPU sample, with the stat lines `spend` rewrote meanwhile.
fn scan_after_cpu_use(options: &ScanOptions, spend: impl FnOnce(&FakeProc)) -> Scan {
    let proc = pod();
    let mut scanner = Scanner::new(proc.path()).unwrap();
    scanner.sample_cpu().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    spend(&proc);
    scanner.scan(options, Some(&pod_statuses())).unwrap()
}

#[test]
fn cpu_millicores_from_the_difference_between_two_scans() {
    let scan = scan_after_cpu_use(&all(), |proc| {
        // The broker used 10 more ticks (100 ms at 100 Hz) meanwhile: about 1000 millicores.
        let mut broker = FakeProcess::new(19, "flux-broker", b"flux-broker\0");
        broker.utime += 10;
        proc.write(19, "stat", broker.stat_line());
    });
    let flux = container(&scan.containers, "flux");
    let millicores = flux.processes[0].cpu_millicores;
    assert!((500..=1000).contains(&millicores), "{millicores}");
    assert_eq!(flux.cpu_millicores, millicores);
    assert_eq!(
        container(&scan.containers, "nginx").processes[0].cpu_millicores,
        0
    );
}

#[test]
fn container_totals_count_the_processes_not_listed() {
    let options = ScanOptions {
        max_processes: 1,
        ..ScanOptions::default()
    };
    let scan = scan_after_cpu_use(&options, |proc| {
        // Master and worker both used 10 more ticks meanwhile.
        for (pid, utime, rss_pages) in [(7, 10 + 10, 100), (8, 500 + 10, 300)] {
            let mut nginx = FakeProcess::new(pid, "nginx", b"");
            (nginx.utime, nginx.rss_pages) = (utime, rss_pages);
            proc.write(pid, "stat", nginx.stat_line());
        }
    });
    let nginx = container(&scan.containers, "nginx");
    assert_eq!(nginx.processes.len(), 1);
    let listed = &nginx.processes[0];
    assert!(listed.cpu_millicores > 0);
    assert_eq!(nginx.cpu_millicores, 2 * listed.cpu_millicores);
    let page_size = procwatch_agent::procfs_read::page_size();
    assert_eq!(nginx.memory_bytes, 400 * page_size);
}

/// Members of each reported group, by pid.
fn members(containers: &[ContainerReport]) -> Vec<(&str, Vec<i32>)> {
    containers
        .iter()
        .map(|c| {
            let mut pids: Vec<i32> = c.processes.iter().map(|p| p.pid).collect();
            pids.sort_unstable();
            (c.name.as_str(), pids)
        })
        .collect()
}

#[test]
fn a_mount_namespace_is_attributed_by_the_cgroup_of_one_process() {
    let proc = pod();
    // Another nginx worker, in the master's mount namespace, whose cgroup file is not there:
    // had the scan read it, the process would count as vanished.
    let mut worker = FakeProcess::new(9, "nginx", b"nginx: worker process\0");
    worker.ppid = 7;
    worker.mount_namespace = Some(20);
    proc.add(&worker);
    std::fs::remove_file(proc.pid_dir(9).join("cgroup")).unwrap();
    // Started into flux's mount namespace from outside (nsenter): its cgroup names nothing,
    // so the next process's cgroup is read too.
    let mut entered = FakeProcess::new(18, "sh", b"sh\0");
    entered.cgroup = "0::/user.slice/user-0.slice/session-1.scope\n".into();
    entered.mount_namespace = Some(30);
    proc.add(&entered);
    // A mount namespace link the agent may not read (no ptrace access; a zombie has none):
    // the process's own cgroup tells.
    let mut helper = FakeProcess::new(25, "flux-helper", b"flux-helper\0");
    helper.cgroup = format!("0::/../cri-containerd-{FLUX_ID}.scope\n");
    helper.mount_namespace = None;
    proc.add(&helper);
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let statuses = pod_statuses();
    let scan = scanner.scan(&all(), Some(&statuses)).unwrap();
    assert_eq!(scan.vanished, 0);
    assert_eq!(
        members(&scan.containers),
        [("flux", vec![18, 19, 25]), ("nginx", vec![7, 8, 9])]
    );
}

#[test]
fn the_host_mount_namespace_costs_a_few_cgroup_reads() {
    let proc = FakeProc::new(1);
    for pid in 1..=6 {
        proc.add(&FakeProcess::new(pid, "sh", b"sh\0"));
    }
    // Cgroups of the first three processes name no container: the others' are not read.
    for pid in 4..=6 {
        std::fs::remove_file(proc.pid_dir(pid).join("cgroup")).unwrap();
    }
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let scan = scanner.scan(&all(), None).unwrap();
    assert_eq!(scan.vanished, 0);
    assert_eq!(
        members(&scan.containers),
        [("host", vec![1, 2, 3, 4, 5, 6])]
    );
}

#[test]
fn a_process_vanishing_between_reads_is_skipped_and_counted() {
    let proc = pod();
    // Listed, but gone before its stat was read.
    std::fs::create_dir(proc.pid_dir(50)).unwrap();
    // Its stat was read, then it exited: status is gone.
    let mut exiting = FakeProcess::new(51, "nginx", b"nginx: worker process\0");
    exiting.cgroup = format!("0::/../cri-containerd-{NGINX_ID}.scope\n");
    proc.add(&exiting);
    std::fs::remove_file(proc.pid_dir(51).join("status")).unwrap();
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let statuses = pod_statuses();
    let scan = scanner.scan(&all(), Some(&statuses)).unwrap();
    assert_eq!(scan.vanished, 2);
    let nginx = container(&scan.containers, "nginx");
    assert_eq!(nginx.process_count, 2);
    assert!(nginx.processes.iter().all(|p| p.pid != 51));
}

#[test]
fn odd_files_do_not_fail_the_scan() {
    let proc = FakeProc::new(1);
    let mut init = FakeProcess::new(1, "init", b"/sbin/init\0");
    init.exe = None; // like a kernel thread
    proc.add(&init);
    // Missing Uid, garbage capabilities, invalid UTF-8 and embedded NULs in the command line.
    proc.write(1, "status", "Name:\tinit\nCapEff:\tnot-hex\n");
    proc.write(1, "cmdline", b"/sbin/in\xffit\0--x\0\0y\0".as_slice());
    // A malformed stat makes a process invisible, not the scan failed.
    let kthread = FakeProcess::new(2, "kthreadd", b"");
    proc.add(&kthread);
    proc.write(2, "stat", "2 (kthreadd");
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let scan = scanner.scan(&all(), None).unwrap();
    assert_eq!(scan.containers.len(), 1);
    let host = &scan.containers[0];
    assert_eq!(host.name, "host");
    assert_eq!(host.process_count, 1);
    let init = &host.processes[0];
    assert_eq!(init.args, "/sbin/in\u{fffd}it --x  y");
    assert!(init.capabilities.is_empty());
    assert_eq!(init.exe, None);
    assert_eq!(host.unreadable, ["uid of pid 1: no Uid line in status"]);
}

#[test]
fn host_groups_named_by_runtime_and_short_id() {
    let proc = FakeProc::new(1);
    proc.add(&FakeProcess::new(1, "init", b"/sbin/init\0"));
    let mut shim = FakeProcess::new(300, "nginx", b"nginx\0");
    shim.cgroup = format!(
        "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d3b4c5e_1a2b.slice/cri-containerd-{NGINX_ID}.scope\n0::/\n"
    );
    shim.mount_namespace = Some(77);
    proc.add(&shim);
    let mut pause = FakeProcess::new(299, "pause", b"/pause\0");
    pause.cgroup = format!("0::/kubepods/besteffort/pod0d3b4c5e/{SANDBOX_ID}\n");
    proc.add(&pause);
    let mut podman = FakeProcess::new(400, "sleep", b"sleep\x00100\x00");
    podman.mount_namespace = Some(88);
    podman.cgroup = format!("0::/libpod_parent/{SANDBOX_ID}/libpod-{FLUX_ID}\n");
    proc.add(&podman);
    let mut scanner = Scanner::new(proc.path()).unwrap();
    let scan = scanner.scan(&all(), None).unwrap();
    let names: Vec<(&str, Option<&str>)> = scan
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.container_id.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "containerd-3f2a9c1b7e0d",
                Some(format!("containerd://{NGINX_ID}").as_str())
            ),
            ("host", None),
            (
                "podman-aaaaaaaaaaaa",
                Some(format!("podman://{FLUX_ID}").as_str())
            ),
        ]
    );
}

#[test]
fn a_directory_that_is_not_proc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = Scanner::new(dir.path()).unwrap_err().to_string();
    assert!(error.contains("is not a proc filesystem"), "{error}");
    std::fs::write(dir.path().join("stat"), "cpu 1\n").unwrap();
    std::os::unix::fs::symlink("1", dir.path().join("self")).unwrap();
    // As the binary prints it: the error, then its causes.
    let error = format!(
        "{:#}",
        anyhow::Error::from(Scanner::new(dir.path()).unwrap_err())
    );
    assert!(
        error.contains("cannot parse") && error.contains("no btime"),
        "{error}"
    );
}
