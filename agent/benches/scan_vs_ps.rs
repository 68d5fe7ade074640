//! One full scan against `ps` over the same processes, with 1,000 extra sleeping processes on
//! the machine, run side by side; the agent's peak RSS. Writes the figures to BENCHMARKS.md.
//!
//! Run: `cargo bench -p procwatch-agent --bench scan_vs_ps` (as any user; more processes are
//! visible as root).

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procwatch_agent::{ScanOptions, Scanner};
use procwatch_crds::EnvironmentPolicy;

const EXTRA_PROCESSES: usize = 1000;
const RUNS: usize = 21;
const AGENT: &str = env!("CARGO_BIN_EXE_procwatch-agent");

/// The extra sleepers, killed however the benchmark ends.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// Wall time, CPU time (user + system) and peak RSS of one run of a command.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
}

#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn run_once(program: &str, args: &[&str]) -> Run {
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointers are valid for the call; the pid is our own child's.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{program} {args:?} failed"
    );
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        wall,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        peak_rss_kib: usage.ru_maxrss as u64,
    }
}

struct Summary {
    name: &'static str,
    command: String,
    median_wall: Duration,
    median_cpu: Duration,
    max_peak_rss_kib: u64,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn summarize(name: &'static str, program: &str, args: &[&str], runs: &[Run]) -> Summary {
    Summary {
        name,
        command: format!("{} {}", program.rsplit('/').next().unwrap(), args.join(" ")),
        median_wall: median(runs.iter().map(|r| r.wall).collect()),
        median_cpu: median(runs.iter().map(|r| r.cpu).collect()),
        max_peak_rss_kib: runs.iter().map(|r| r.peak_rss_kib).max().unwrap(),
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need: only run the
    // measurement when asked to bench.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let sleepers = Sleepers(
        (0..EXTRA_PROCESSES)
            .map(|_| {
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("sleep")
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|entry| {
            entry.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .count();

    let ps_args = ["-eo", "pid,ppid,uid,rss,nlwp,stat,args"];
    let same_facts = [
        "snapshot",
        "--format",
        "json",
        "--interval",
        "0",
        "--environment",
        "none",
        "--no-open-files",
        "--no-sockets",
        "--no-paths",
    ];
    let full = ["snapshot", "--format", "json", "--interval", "0"];
    let table = [
        "snapshot",
        "--interval",
        "0",
        "--environment",
        "none",
        "--no-open-files",
        "--no-sockets",
        "--no-paths",
    ];
    let operator_default = [
        "snapshot",
        "--format",
        "json",
        "--interval",
        "0",
        "--max-processes",
        "20",
    ];
    let commands: [(&'static str, &str, &[&str]); 5] = [
        ("ps", "ps", &ps_args),
        ("agent, the same facts as ps (JSON)", AGENT, &same_facts),
        ("agent, the same facts as ps (table)", AGENT, &table),
        (
            "agent, default collection, every process listed (JSON)",
            AGENT,
            &full,
        ),
        (
            "agent, default collection, 20 busiest per container as `run` reports (JSON)",
            AGENT,
            &operator_default,
        ),
    ];
    // Warm the page cache and the binaries, then alternate so load changes hit all alike.
    for (_, program, args) in &commands {
        run_once(program, args);
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); commands.len()];
    for _ in 0..RUNS {
        for (index, (_, program, args)) in commands.iter().enumerate() {
            runs[index].push(run_once(program, args));
        }
    }
    let summaries: Vec<Summary> = commands
        .iter()
        .zip(&runs)
        .map(|((name, program, args), runs)| summarize(name, program, args, runs))
        .collect();

    // The library alone, without process start-up: the cost of a scan inside `run`.
    let mut scanner = Scanner::new("/proc").unwrap();
    let mut library = |options: &ScanOptions| {
        median(
            (0..RUNS)
                .map(|_| {
                    let started = Instant::now();
                    let scan = scanner.scan(options, None).unwrap();
                    assert!(
                        scan.containers
                            .iter()
                            .map(|c| c.process_count as usize)
                            .sum::<usize>()
                            >= EXTRA_PROCESSES
                    );
                    started.elapsed()
                })
                .collect(),
        )
    };
    let all = usize::MAX;
    let lean = library(&ScanOptions {
        environment: EnvironmentPolicy::None,
        open_files: false,
        sockets: false,
        paths: false,
        max_processes: all,
        ..ScanOptions::default()
    });
    let default_all = library(&ScanOptions {
        max_processes: all,
        ..ScanOptions::default()
    });
    let default_top20 = library(&ScanOptions::default());
    drop(sleepers);

    let report = render(processes, &summaries, [lean, default_all, default_top20]);
    print!("{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md");
    std::fs::write(path, report).unwrap();
    eprintln!("written to BENCHMARKS.md");
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let ps = Command::new("ps")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    format!(
        "{cpu}, {cores} cores, Linux {}, {}; load average at the start: {}",
        kernel.trim(),
        ps.unwrap_or_default(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn render(
    processes: usize,
    summaries: &[Summary],
    [lean, default_all, default_top20]: [Duration; 3],
) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let ps = &summaries[0];
    let agent = &summaries[1];
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "## One scan of the machine: `procwatch-agent snapshot` against `ps`\n"
    );
    let _ = writeln!(out, "- Date: {date}");
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(
        out,
        "- Processes on the machine during the runs: {processes} ({EXTRA_PROCESSES} of them extra `sleep 600` started by the benchmark)"
    );
    let _ = writeln!(
        out,
        "- Method: each command run {RUNS} times, alternating, output to /dev/null; median wall and CPU (user + system) time, and the largest peak RSS (`ru_maxrss` from wait4) over the runs. Release build.\n"
    );
    let _ = writeln!(
        out,
        "| what | command | wall (median) | CPU (median) | peak RSS (max) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for summary in summaries {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {:.1} MiB |",
            summary.name,
            summary.command,
            ms(summary.median_wall),
            ms(summary.median_cpu),
            summary.max_peak_rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nThe scan alone, in process (library `Scanner::scan`, as `procwatch-agent run` does it every interval), median of {RUNS}:\n"
    );
    let _ = writeln!(out, "| options | wall (median) |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| the same facts as ps, every process listed | {} |",
        ms(lean)
    );
    let _ = writeln!(
        out,
        "| default collection (environment names, open files, sockets), every process listed | {} |",
        ms(default_all)
    );
    let _ = writeln!(
        out,
        "| default collection, the busiest 20 per container listed (the operator's default) | {} |",
        ms(default_top20)
    );
    let cost_ok = agent.median_cpu <= ps.median_cpu;
    let run_like = &summaries[4];
    let rss_ok = run_like.max_peak_rss_kib < 10 * 1024;
    let largest = summaries[1..]
        .iter()
        .max_by_key(|s| s.max_peak_rss_kib)
        .unwrap();
    let _ = writeln!(out, "\nGoals:\n");
    let _ = writeln!(
        out,
        "- The scan costs no more than `ps` for the same facts: **{}** (agent {} CPU against ps {}; to list the same facts the agent reads each process's cgroup, and mount namespace where there are containers, to attribute it to a container, where ps reads each environ; the agent's other facts (exe, cwd, open files, sockets, environment) are left out of this row with the `--no-*` flags).",
        if cost_ok { "met" } else { "missed" },
        ms(agent.median_cpu),
        ms(ps.median_cpu)
    );
    let _ = writeln!(
        out,
        "- The agent stays under 10 MiB RSS: **{}** for what `run` does (the operator's default, 20 busiest processes per container: {:.1} MiB). The largest peak, {:.1} MiB, is `{}`: a snapshot that holds every process's full listing before printing it grows with the number of processes and their environment size{}.",
        if rss_ok { "met" } else { "missed" },
        run_like.max_peak_rss_kib as f64 / 1024.0,
        largest.max_peak_rss_kib as f64 / 1024.0,
        largest.command,
        if largest.max_peak_rss_kib >= 10 * 1024 {
            " (over 10 MiB here)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "\nRe-run: `cargo bench -p procwatch-agent --bench scan_vs_ps` (root sees every process's details; the file is rewritten)."
    );
    out
}
