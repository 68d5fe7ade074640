//! A cross-check against an independent implementation: procps `ps` must agree with the
//! scanner on pid, ppid, uid, threads, state and args, and on RSS within a small tolerance.

use std::collections::HashMap;
use std::process::Command;

use procwatch_agent::table::state_letter;
use procwatch_agent::{ScanOptions, Scanner};
use procwatch_crds::ProcessInfo;

#[derive(Debug, Clone, PartialEq)]
struct PsRow {
    ppid: i32,
    uid: u32,
    threads: u32,
    state: char,
    rss_kib: u64,
    args: String,
}

fn ps() -> HashMap<i32, PsRow> {
    let output = Command::new("ps")
        .args([
            "-eo",
            "pid,ppid,uid,nlwp,stat,rss,args",
            "-ww",
            "--no-headers",
        ])
        .env("LC_ALL", "C")
        .output()
        .expect("procps ps is installed");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_ps_line)
        .collect()
}

/// Six whitespace-separated numbers and flags, then the args with their own spacing.
fn parse_ps_line(line: &str) -> Option<(i32, PsRow)> {
    let mut rest = line.trim_start();
    let mut fields = Vec::new();
    for _ in 0..6 {
        let end = rest.find(' ')?;
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    let state = fields[4].chars().next()?;
    let mut args = rest.trim_end().to_string();
    if state == 'Z' {
        args = args.trim_end_matches(" <defunct>").to_string();
    }
    Some((
        fields[0].parse().ok()?,
        PsRow {
            ppid: fields[1].parse().ok()?,
            uid: fields[2].parse().ok()?,
            threads: fields[3].parse().ok()?,
            state,
            rss_kib: fields[5].parse().ok()?,
            args,
        },
    ))
}

/// What `ps` prints for our args: `[comm]` when there are none.
fn as_ps_prints(process: &ProcessInfo) -> String {
    if process.args.is_empty() {
        format!("[{}]", process.command)
    } else {
        process.args.trim_end().to_string()
    }
}

#[test]
fn agrees_with_procps_ps() {
    // Some processes with odd command lines: several spaces, an empty argument, many threads
    // (this test binary).
    let mut sleeper = Command::new("sleep").args(["30", "--", ""]).spawn().ok();
    let mut spaced = Command::new("sh")
        .args(["-c", "sleep 30", "name  with   spaces"])
        .spawn()
        .unwrap();

    let before = ps();
    let mut scanner = Scanner::new("/proc").unwrap();
    let options = ScanOptions {
        max_processes: usize::MAX,
        ..ScanOptions::default()
    };
    let scan = scanner.scan(&options, None).unwrap();
    let after = ps();

    let mut compared = 0;
    let mut mismatches = Vec::new();
    let stable: Vec<i32> = before
        .iter()
        .filter(|(pid, row)| {
            after
                .get(pid)
                .is_some_and(|later| later.ppid == row.ppid && later.args == row.args)
        })
        .map(|(pid, _)| *pid)
        .collect();
    let ours: HashMap<i32, &ProcessInfo> = scan
        .containers
        .iter()
        .flat_map(|c| c.processes.iter())
        .map(|p| (p.pid, p))
        .collect();
    for pid in &stable {
        let Some(process) = ours.get(pid) else {
            continue;
        };
        let (first, second) = (&before[pid], &after[pid]);
        compared += 1;
        let mut check = |what: &str, agree: bool, ps_value: String, our_value: String| {
            if !agree {
                mismatches.push(format!(
                    "pid {pid} {what}: ps {ps_value}, agent {our_value}"
                ));
            }
        };
        check(
            "ppid",
            process.ppid == first.ppid,
            first.ppid.to_string(),
            process.ppid.to_string(),
        );
        check(
            "uid",
            process.uid == first.uid,
            first.uid.to_string(),
            process.uid.to_string(),
        );
        let args = as_ps_prints(process);
        if args.is_ascii() && !args.chars().any(char::is_control) && !args.ends_with('…') {
            check("args", args == first.args, first.args.clone(), args);
        }
        if first.threads == second.threads {
            check(
                "threads",
                process.threads == first.threads,
                first.threads.to_string(),
                process.threads.to_string(),
            );
        }
        // Running and disk sleep are moments: a busy process flips between R, D and S.
        let ours = state_letter(process.state);
        let transient = |state: char| state == 'R' || state == 'D';
        if first.state == second.state && !transient(first.state) && !transient(ours) {
            check(
                "state",
                ours == first.state,
                first.state.to_string(),
                ours.to_string(),
            );
        }
        let ours_kib = process.memory_bytes / 1024;
        let low = first.rss_kib.min(second.rss_kib);
        let high = first.rss_kib.max(second.rss_kib);
        let slack = (high / 20).max(256);
        check(
            "rss",
            ours_kib + slack >= low && ours_kib <= high + slack,
            format!("{low}..{high} KiB"),
            format!("{ours_kib} KiB"),
        );
    }
    if let Some(sleeper) = &mut sleeper {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    let _ = spaced.kill();
    let _ = spaced.wait();

    eprintln!(
        "compared {compared} of {} processes stable across both ps runs",
        stable.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(
        compared >= 3 && compared * 10 >= stable.len() * 9,
        "compared only {compared} of {}",
        stable.len()
    );
    let spaced_args = "sh -c sleep 30 name  with   spaces";
    assert!(before.values().any(|row| row.args == spaced_args));
}

#[test]
fn parses_ps_lines() {
    let (pid, row) =
        parse_ps_line("  7     1   101     1 Ss     7688 nginx: master process  x").unwrap();
    assert_eq!(pid, 7);
    assert_eq!(
        row,
        PsRow {
            ppid: 1,
            uid: 101,
            threads: 1,
            state: 'S',
            rss_kib: 7688,
            args: "nginx: master process  x".into()
        }
    );
    let (_, zombie) = parse_ps_line("99 1 0 1 Z 0 [sh] <defunct>").unwrap();
    assert_eq!(zombie.args, "[sh]");
}
