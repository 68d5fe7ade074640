//! One full scan against `ps` over the same processes, with 1,000 extra sleeping processes on
//! the machine, run side by side; the agent's peak RSS. Writes the figures to its section of
//! BENCHMARKS.md.
//!
//! Run: `cargo bench -p procwatch-agent --bench scan_vs_ps` (as root, to see every process's
//! details).

mod common;

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procwatch_agent::procfs_read::ProcRoot;
use procwatch_agent::{ScanOptions, Scanner};
use procwatch_crds::EnvironmentPolicy;

const EXTRA_PROCESSES: usize = 1000;
const RUNS: usize = 21;
const AGENT: &str = env!("CARGO_BIN_EXE_procwatch-agent");

const PS: &[&str] = &["-eo", "pid,ppid,uid,rss,nlwp,stat,args"];
const SAME_FACTS_JSON: &[&str] = &[
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
const SAME_FACTS_TABLE: &[&str] = &[
    "snapshot",
    "--interval",
    "0",
    "--environment",
    "none",
    "--no-open-files",
    "--no-sockets",
    "--no-paths",
];
const FULL: &[&str] = &["snapshot", "--format", "json", "--interval", "0"];
const AS_RUN: &[&str] = &[
    "snapshot",
    "--format",
    "json",
    "--interval",
    "0",
    "--max-processes",
    "20",
];

/// What is compared: (row name, program, arguments).
const COMMANDS: [(&str, &str, &[&str]); 5] = [
    ("ps", "ps", PS),
    ("agent, the same facts as ps (JSON)", AGENT, SAME_FACTS_JSON),
    (
        "agent, the same facts as ps (table)",
        AGENT,
        SAME_FACTS_TABLE,
    ),
    (
        "agent, default collection, every process listed (JSON)",
        AGENT,
        FULL,
    ),
    (
        "agent, default collection, 20 busiest per container as `run` reports (JSON)",
        AGENT,
        AS_RUN,
    ),
];

/// The environment the extra sleepers carry: `ps` reads every process's environ, so its cost
/// depends on it; the agent reads it only when asked.
#[derive(Clone, Copy)]
enum SleeperEnvironment {
    /// Two variables, like a daemon's.
    Daemon,
    /// This benchmark's own (cargo's), like a process started from a developer's shell.
    Inherited,
}

impl SleeperEnvironment {
    fn describe(self) -> String {
        match self {
            SleeperEnvironment::Daemon => "a two-variable environment, like a daemon's".to_string(),
            SleeperEnvironment::Inherited => format!(
                "the benchmark's own environment ({} variables), like a process started from a shell",
                std::env::vars_os().count()
            ),
        }
    }
}

/// The extra sleepers, killed however the benchmark ends.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start(environment: SleeperEnvironment) -> Self {
        let sleepers = Sleepers(
            (0..EXTRA_PROCESSES)
                .map(|_| {
                    let mut sleep = Command::new("sleep");
                    sleep.arg("600").stdin(Stdio::null());
                    if let SleeperEnvironment::Daemon = environment {
                        sleep
                            .env_clear()
                            .env("PATH", "/usr/bin:/bin")
                            .env("HOME", "/");
                    }
                    sleep.spawn().expect("sleep")
                })
                .collect(),
        );
        std::thread::sleep(Duration::from_secs(1));
        sleepers
    }
}

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

/// Runs every command `RUNS` times, alternating so load changes hit all alike.
fn measure() -> Vec<Summary> {
    for (_, program, args) in COMMANDS {
        run_once(program, args); // warm the page cache and the binaries
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); COMMANDS.len()];
    for _ in 0..RUNS {
        for (index, (_, program, args)) in COMMANDS.iter().enumerate() {
            runs[index].push(run_once(program, args));
        }
    }
    COMMANDS
        .iter()
        .zip(runs)
        .map(|((name, program, args), runs)| Summary {
            name,
            command: format!("{} {}", program.rsplit('/').next().unwrap(), args.join(" ")),
            median_wall: median(runs.iter().map(|r| r.wall).collect()),
            median_cpu: median(runs.iter().map(|r| r.cpu).collect()),
            max_peak_rss_kib: runs.iter().map(|r| r.peak_rss_kib).max().unwrap(),
        })
        .collect()
}

/// The library alone, without process start-up: the cost of a scan inside `run`.
fn library_scans() -> [(&'static str, Duration); 3] {
    let mut scanner = Scanner::new("/proc").unwrap();
    let mut median_scan = |options: ScanOptions| {
        median(
            (0..RUNS)
                .map(|_| {
                    let started = Instant::now();
                    let scan = scanner.scan(&options, None).unwrap();
                    let listed: usize = scan
                        .containers
                        .iter()
                        .map(|c| c.process_count as usize)
                        .sum();
                    assert!(listed >= EXTRA_PROCESSES);
                    started.elapsed()
                })
                .collect(),
        )
    };
    let all = usize::MAX;
    [
        (
            "the same facts as ps, every process listed",
            median_scan(ScanOptions {
                environment: EnvironmentPolicy::None,
                open_files: false,
                sockets: false,
                paths: false,
                max_processes: all,
                ..ScanOptions::default()
            }),
        ),
        (
            "default collection (environment names, open files, sockets, exe, cwd), every process listed",
            median_scan(ScanOptions {
                max_processes: all,
                ..ScanOptions::default()
            }),
        ),
        (
            "default collection, the busiest 20 per container listed (the operator's default)",
            median_scan(ScanOptions::default()),
        ),
    ]
}

fn process_count() -> usize {
    ProcRoot::open("/proc").unwrap().pids().unwrap().len()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` builds and runs this too, with nothing to do.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut sections = Vec::new();
    let mut library = None;
    for environment in [SleeperEnvironment::Daemon, SleeperEnvironment::Inherited] {
        let sleepers = Sleepers::start(environment);
        let processes = process_count();
        let summaries = measure();
        if library.is_none() {
            library = Some(library_scans());
        }
        drop(sleepers);
        sections.push((environment, processes, summaries));
    }
    let load_at_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = render(&load, &load_at_end, &sections, &library.expect("measured"));
    print!("{report}");
    common::write_section("scan_vs_ps", &report);
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The machine, `ps`'s version and the load average at `load` (the text of /proc/loadavg).
fn machine_and_load(load: &str) -> String {
    let ps = Command::new("ps")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{}, {ps}; load average at the start: {}",
        common::machine(),
        common::load_average(load)
    )
}

/// `met`/`missed` for one agent row against ps, with the difference.
fn versus_ps(ps: &Summary, agent: &Summary) -> String {
    let change = agent.median_cpu.as_secs_f64() / ps.median_cpu.as_secs_f64() - 1.0;
    format!(
        "**{}** for the {} ({} against {}, {:+.0}%)",
        if change <= 0.0 { "met" } else { "missed" },
        if agent.command.contains("json") {
            "JSON output"
        } else {
            "table"
        },
        ms(agent.median_cpu),
        ms(ps.median_cpu),
        change * 100.0
    )
}

fn render(
    load: &str,
    load_at_end: &str,
    sections: &[(SleeperEnvironment, usize, Vec<Summary>)],
    library: &[(&str, Duration); 3],
) -> String {
    let date = common::date();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## One scan of the machine: `procwatch-agent snapshot` against `ps`\n"
    );
    let _ = writeln!(out, "- Date: {date}");
    let _ = writeln!(
        out,
        "- Machine: {}; at the end: {}",
        machine_and_load(load),
        common::load_average(load_at_end)
    );
    let _ = writeln!(
        out,
        "- Method: {EXTRA_PROCESSES} extra `sleep 600` processes are started; each command then runs {RUNS} times, alternating, output to /dev/null. Figures: median wall and CPU (user + system) time, and the largest peak RSS (`ru_maxrss` from wait4) over the runs. Release build, as root. `ps` reads every process's environ (procps 4 does, for any format), so the whole set runs twice: sleepers with a small and with a large environment."
    );
    let _ = writeln!(
        out,
        "- \"The same facts as ps\": pid, ppid, uid, RSS, threads, state, args, plus what the agent needs to attribute each process to a container (its mount namespace, and the cgroup of the first processes of each mount namespace); the agent's other facts are switched off with `--environment none --no-open-files --no-sockets --no-paths`."
    );
    for (environment, processes, summaries) in sections {
        let _ = writeln!(
            out,
            "\n### Sleepers with {} ({processes} processes in all)\n",
            environment.describe()
        );
        let _ = writeln!(
            out,
            "| what | command | wall (median) | CPU (median) | peak RSS (max) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|");
        for summary in summaries {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} |",
                summary.name,
                summary.command,
                ms(summary.median_wall),
                ms(summary.median_cpu),
                mib(summary.max_peak_rss_kib)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n### The scan alone, in process\n\nThe library's `Scanner::scan`, as `procwatch-agent run` calls it every interval (no process start-up, no output), with the small-environment sleepers, median of {RUNS}:\n"
    );
    let _ = writeln!(out, "| options | wall (median) |");
    let _ = writeln!(out, "|---|---:|");
    for (options, duration) in library {
        let _ = writeln!(out, "| {options} | {} |", ms(*duration));
    }

    let _ = writeln!(out, "\n## Goals\n");
    for (environment, _, summaries) in sections {
        let _ = writeln!(
            out,
            "- The scan costs no more than `ps` for the same facts, sleepers with {}: {}; {}.",
            environment.describe(),
            versus_ps(&summaries[0], &summaries[1]),
            versus_ps(&summaries[0], &summaries[2])
        );
    }
    let run_like = sections
        .iter()
        .map(|(_, _, s)| s[4].max_peak_rss_kib)
        .max()
        .unwrap_or(0);
    let largest = sections
        .iter()
        .flat_map(|(_, _, summaries)| &summaries[1..])
        .max_by_key(|summary| summary.max_peak_rss_kib)
        .expect("agent rows");
    let _ = writeln!(
        out,
        "- The agent stays under 10 MiB RSS: **{}** for what `run` does (the operator's default, the 20 busiest processes per container): at most {}. The largest peak of any agent row, {}, is `{}`: a snapshot that lists every process holds the whole listing before printing it, so it grows with the number of processes and the size of their environments{}.",
        if run_like < 10 * 1024 {
            "met"
        } else {
            "missed"
        },
        mib(run_like),
        mib(largest.max_peak_rss_kib),
        largest.command,
        if largest.max_peak_rss_kib >= 10 * 1024 {
            " (over 10 MiB here)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "\nWhat each reads per process for the same facts: `ps` stats `/proc/<pid>` and reads `stat`, `status`, `environ` and `cmdline`; the agent reads `stat`, `status` and `cmdline` and the `ns/mnt` link, relative to one descriptor of `/proc/<pid>` (opened once when every process is listed), and `cgroup` only for the first processes of each mount namespace: on a host with many cgroup hierarchies, like this one, rendering a cgroup file costs the kernel more than any of the others. With large environments `ps` also pays for reading them."
    );
    let _ = writeln!(
        out,
        "\n{} (about 3 minutes; rewrites this section).",
        common::rerun_line("scan_vs_ps")
    );
    out
}
