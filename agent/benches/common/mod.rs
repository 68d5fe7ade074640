//! What the benches share: the machine's description and their sections of BENCHMARKS.md.
//! Each bench rewrites only its own section, from its heading to its `Re-run:` line, so the
//! figures other benches or people recorded there stay.

#![allow(dead_code)] // Each bench uses its own part of this module.

use std::process::Command;

const BENCHMARKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md");

/// The current time, as `date -u` prints it to the minute.
pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// CPU, cores and kernel.
pub fn machine() -> String {
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
    format!(
        "{cpu}, {cores} cores (shared with other work), Linux {}",
        kernel.trim()
    )
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn load_average(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The line that ends the section of bench `name`.
pub fn rerun_line(name: &str) -> String {
    format!("Re-run: `cargo bench -p procwatch-agent --bench {name}`")
}

/// Puts `section` (which starts with a `## ` heading and ends with the [`rerun_line`] of
/// `name`) into BENCHMARKS.md in place of the section of that bench, or right after the
/// title when there is none yet.
pub fn write_section(name: &str, section: &str) {
    let text = std::fs::read_to_string(BENCHMARKS).unwrap_or_else(|_| "# Benchmarks\n".into());
    let text = replace_section(&text, name, section);
    std::fs::write(BENCHMARKS, text).unwrap();
    eprintln!("written to BENCHMARKS.md");
}

fn replace_section(text: &str, name: &str, section: &str) -> String {
    let heading = section.lines().next().expect("a heading");
    let rerun = rerun_line(name);
    let start = text.find(&format!("{heading}\n"));
    let end = start.and_then(|start| {
        let rerun_at = start + text[start..].find(&rerun)?;
        Some(
            rerun_at
                + text[rerun_at..]
                    .find('\n')
                    .map_or(text.len() - rerun_at, |n| n + 1),
        )
    });
    match (start, end) {
        (Some(start), Some(end)) => format!("{}{section}{}", &text[..start], &text[end..]),
        _ => {
            let title_end = text.find('\n').map_or(text.len(), |n| n + 1);
            format!("{}\n{section}{}", &text[..title_end], &text[title_end..])
        }
    }
}
