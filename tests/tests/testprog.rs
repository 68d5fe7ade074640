//! The experiments' test program (`procwatch-testprog`) on this machine, no cluster needed: the
//! shapes the end-to-end tests rely on (parent pids, command lines, names, socket answers).

use std::io::{BufRead, BufReader};

const EXE: &str = env!("CARGO_BIN_EXE_procwatch-testprog");

#[test]
fn broker_answers_on_every_socket_and_connect_prints_it() {
    let base = std::env::temp_dir().join(format!("pw-testprog-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let prefix = format!("{}/flux-", base.display());
    let (mut broker, ready) = spawn_ready(&["broker", "--sockets", "2", "--dir-prefix", &prefix]);
    let dir = ready.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        dir.starts_with(&prefix) && dir.len() == prefix.len() + 6,
        "{ready}"
    );
    for index in 0..2 {
        let path = format!("{dir}/local-{index}");
        let out = std::process::Command::new(EXE)
            .args(["connect", &path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("flux-broker pid {} on {path}\n", broker.id())
        );
    }
    assert_eq!(comm_soon(broker.id(), "flux-broker"), "flux-broker");
    broker.kill().unwrap();
    broker.wait().unwrap();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn trainer_runs_its_workers_as_children_and_finishes() {
    let (mut trainer, _stdout, pids) = spawn_trainer(&["--workers", "3", "--seconds", "2"]);
    assert_eq!(pids.len(), 3, "{pids:?}");
    for (rank, pid) in pids.iter().enumerate() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(ppid, trainer.id());
        let cmdline = cmdline_soon(*pid);
        assert_eq!(
            String::from_utf8(cmdline).unwrap(),
            format!("procwatch-testprog\0worker\0--rank\0{rank}\0--seconds\x002\0")
        );
        assert_eq!(comm_soon(*pid, "worker"), "worker");
    }
    assert_eq!(comm_soon(trainer.id(), "trainer"), "trainer");
    assert!(trainer.wait().unwrap().success());
}

/// Starts `procwatch-testprog trainer ARGS...` and returns it with the worker pids its
/// `trainer pid N started K workers: W1 W2 ...` line names, and its stdout, which must stay open
/// while it runs (the trainer and its workers go on writing to it).
fn spawn_trainer(
    args: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    Vec<u32>,
) {
    let mut trainer = std::process::Command::new(EXE)
        .arg("trainer")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(trainer.stdout.take().unwrap());
    // Workers share the pipe and may speak first.
    let mut line = String::new();
    while !line.starts_with("trainer pid") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no trainer line");
    }
    let workers = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (trainer, out, workers)
}

/// The process's name once it is `want`, or what it is after 5 s (a process names itself
/// right after it starts).
fn comm_soon(pid: u32, want: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim().to_owned();
        if comm == want || std::time::Instant::now() > deadline {
            return comm;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn trainer_stops_its_workers_on_sigterm() {
    let (mut trainer, _stdout, workers) = spawn_trainer(&["--workers", "2"]);
    assert_eq!(comm_soon(trainer.id(), "trainer"), "trainer");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &trainer.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(trainer.wait().unwrap().success(), "exit 0 on SIGTERM");
    for pid in workers {
        // Reaped by the trainer before it exited: gone, not even a zombie.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
}

/// The process's command line once it has one: the parent sees a successful exec (the
/// close-on-exec pipe closes) a moment before the kernel has set up the new argv.
fn cmdline_soon(pid: u32) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.is_empty() || std::time::Instant::now() > deadline {
            return cmdline;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `procwatch-testprog ARGS...` and returns it with the first line it prints.
fn spawn_ready(args: &[&str]) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(EXE)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    (child, ready)
}

/// The value of a `Name:\tvalue` line of `/proc/<pid>/status`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn threads_runs_as_many_threads_as_asked() {
    let (mut threads, ready) = spawn_ready(&["threads", "--count", "300"]);
    assert_eq!(
        ready,
        format!("threads pid {} runs 300 threads\n", threads.id())
    );
    assert_eq!(status_field(threads.id(), "Threads"), "300");
    assert_eq!(comm_soon(threads.id(), "threads"), "threads");
    threads.kill().unwrap();
    threads.wait().unwrap();
}

#[test]
fn bulky_becomes_hold_with_its_bytes_of_arguments_and_environment() {
    const BYTES: usize = 200_000;
    let (mut hold, ready) = spawn_ready(&["bulky", "--bytes", &BYTES.to_string()]);
    // The same process, re-executed.
    assert_eq!(ready, format!("hold pid {}\n", hold.id()));
    assert_eq!(comm_soon(hold.id(), "hold"), "hold");
    let cmdline = cmdline_soon(hold.id());
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert_eq!(&args[..2], [&b"procwatch-testprog"[..], b"hold"]);
    let bulk: usize = args[2..].iter().map(|a| a.len()).sum();
    assert_eq!(bulk, BYTES);
    let environ = std::fs::read(format!("/proc/{}/environ", hold.id())).unwrap();
    let values: usize = environ
        .split(|&b| b == 0)
        .filter(|v| v.starts_with(b"BULK_"))
        .map(|v| v.len() - v.iter().position(|&b| b == b'=').unwrap() - 1)
        .sum();
    assert_eq!(values, BYTES);
    hold.kill().unwrap();
    hold.wait().unwrap();
}
