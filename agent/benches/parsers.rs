//! The agent's own /proc parsers against `procfs-core`'s, on the same bytes read from this
//! machine, for every format where the agent keeps a parser of its own. Writes the figures to
//! its section of BENCHMARKS.md.
//!
//! Run: `cargo bench -p procwatch-agent --bench parsers`.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use procfs_core::net::UnixNetEntries;
use procfs_core::process::{Stat, Status};
use procfs_core::{FromBufRead, FromRead};
use procwatch_agent::parse::{net, stat, status};

/// Timed rounds per parser in one pass; the pass's figure is their median.
const ROUNDS: usize = 21;
/// Passes over every format, one after the other; the figure reported is their median.
const PASSES: usize = 3;
/// Each round lasts at least this long, so the clock's resolution does not matter.
const ROUND: Duration = Duration::from_millis(20);
/// Processes a scan of this machine's size reads, to turn a parse into a share of the scan.
const PROCESSES: f64 = 1000.0;
/// What a scan of [`PROCESSES`] processes costs (BENCHMARKS.md, "The scan alone").
const SCAN_MS: f64 = 40.0;
/// Extra time per scan that matters: 1% of it.
const MATTERS_MS: f64 = SCAN_MS / 100.0;

/// One format, parsed by both on the same bytes.
struct Comparison {
    format: &'static str,
    /// How often one scan of [`PROCESSES`] processes parses it.
    per_scan: &'static str,
    parses_per_scan: f64,
    /// What `procfs-core`'s parser lacks beyond speed, if anything.
    lacks: Option<&'static str>,
    bytes: usize,
    ours: Duration,
    procfs_core: Duration,
}

/// The median time of one call of `parse`, over [`ROUNDS`] rounds.
fn time_per_call(mut parse: impl FnMut()) -> Duration {
    // Calls per round: as many as fill [`ROUND`] once warm.
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < ROUND {
        parse();
        calls += 1;
    }
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                parse();
            }
            start.elapsed() / calls
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn measure() -> Vec<Comparison> {
    // Check that both parse the input before timing them.
    let stat_text = read("/proc/self/stat");
    stat::parse_pid_stat(&stat_text).unwrap();
    Stat::from_read(&stat_text[..]).unwrap();
    let status_text = read("/proc/self/status");
    assert!(
        status::parse_pid_status(&status_text)
            .effective_uid
            .is_some()
    );
    Status::from_buf_read(&status_text[..]).unwrap();
    let unix_text = read("/proc/net/unix");
    UnixNetEntries::from_buf_read(&unix_text[..]).unwrap();

    vec![
        Comparison {
            format: "`/proc/<pid>/stat`",
            per_scan: "every process",
            parses_per_scan: PROCESSES,
            lacks: None,
            bytes: stat_text.len(),
            ours: time_per_call(|| {
                black_box(stat::parse_pid_stat(black_box(&stat_text)).ok());
            }),
            procfs_core: time_per_call(|| {
                black_box(Stat::from_read(black_box(&stat_text[..])).ok());
            }),
        },
        Comparison {
            format: "`/proc/<pid>/status`",
            per_scan: "every listed process",
            parses_per_scan: PROCESSES,
            lacks: Some(
                "fails the whole file when any of its twenty-odd required lines is missing or odd, where ours keeps every field it can read",
            ),
            bytes: status_text.len(),
            ours: time_per_call(|| {
                black_box(status::parse_pid_status(black_box(&status_text)));
            }),
            procfs_core: time_per_call(|| {
                black_box(Status::from_buf_read(black_box(&status_text[..])).ok());
            }),
        },
        Comparison {
            format: "`/proc/<pid>/net/unix`",
            per_scan: "once per network namespace",
            parses_per_scan: 1.0,
            lacks: Some(
                "leaves out the flags that tell a listening socket from a bound one, and cuts paths at their first space",
            ),
            bytes: unix_text.len(),
            ours: time_per_call(|| {
                black_box(net::parse_unix_listeners(black_box(&unix_text)));
            }),
            procfs_core: time_per_call(|| {
                black_box(UnixNetEntries::from_buf_read(black_box(&unix_text[..])).ok());
            }),
        },
    ]
}

/// Per format, the pass with the median time of ours, and the median time of procfs-core's.
fn median_of(passes: &mut [Vec<Comparison>]) -> Vec<Comparison> {
    let formats = passes[0].len();
    (0..formats)
        .map(|format| {
            let mut ours: Vec<Duration> = passes.iter().map(|p| p[format].ours).collect();
            let mut theirs: Vec<Duration> = passes.iter().map(|p| p[format].procfs_core).collect();
            ours.sort();
            theirs.sort();
            let first = &passes[0][format];
            Comparison {
                ours: ours[PASSES / 2],
                procfs_core: theirs[PASSES / 2],
                ..*first
            }
        })
        .collect()
}

fn micros(duration: Duration) -> String {
    format!("{:.2} µs", duration.as_secs_f64() * 1e6)
}

fn render(load: &str, load_at_end: &str, comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## /proc parsers: procfs-core against the agent's own\n"
    );
    let _ = writeln!(out, "- Date: {}", common::date());
    let _ = writeln!(
        out,
        "- Machine: {}; load average at the start: {}, at the end: {}",
        common::machine(),
        common::load_average(load),
        common::load_average(load_at_end)
    );
    let _ = writeln!(
        out,
        "- Method: the same bytes, read once from this machine's /proc, parsed by each; time per parse is the median of {ROUNDS} rounds of {} ms each, and the figure shown the median of {PASSES} such passes over every format (the machine is shared and noisy: medians, not means). Release build, as root. \"Per scan\" multiplies by how often a scan of {PROCESSES} processes parses the format; the agent's scan of {PROCESSES} processes takes about {SCAN_MS} ms, so an own parser is kept for speed where `procfs-core` would add more than 1% of it ({MATTERS_MS} ms).",
        ROUND.as_millis()
    );
    let _ = writeln!(
        out,
        "- The formats `procfs-core` parses for the agent (the TCP and UDP tables, `maps`, `cgroup`, descriptor link targets) are not here: the agent has no parser of its own for them any more.\n"
    );
    let _ = writeln!(
        out,
        "| format | bytes | ours | procfs-core | procfs-core / ours | parsed per scan | extra per scan with procfs-core | ours kept because |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---|");
    for c in comparisons {
        let extra =
            (c.procfs_core.as_secs_f64() - c.ours.as_secs_f64()).max(0.0) * c.parses_per_scan;
        let extra_ms = extra * 1000.0;
        let mut reasons = Vec::new();
        if extra_ms > MATTERS_MS {
            reasons.push("faster by more than 1% of a scan".to_string());
        }
        if let Some(lacks) = c.lacks {
            reasons.push(format!("procfs-core {lacks}"));
        }
        if reasons.is_empty() {
            reasons.push("**no reason: use procfs-core**".to_string());
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1}× | {} | {:.2} ms | {} |",
            c.format,
            c.bytes,
            micros(c.ours),
            micros(c.procfs_core),
            c.procfs_core.as_secs_f64() / c.ours.as_secs_f64(),
            c.per_scan,
            extra_ms,
            reasons.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "\n{} (about 30 seconds; rewrites this section).",
        common::rerun_line("parsers")
    );
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` builds and runs this too, with nothing to do.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut passes: Vec<Vec<Comparison>> = (0..PASSES).map(|_| measure()).collect();
    let comparisons = median_of(&mut passes);
    let load_at_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let section = render(&load, &load_at_end, &comparisons);
    print!("{section}");
    common::write_section("parsers", &section);
}
