//! A cross-check against an independent implementation: procps `ps` must agree with the
//! scanner on pid, ppid, uid, threads, state and args, and on RSS within a small tolerance.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

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

/// One observation: `ps`, a scan, `ps` again. Facts are compared for the processes `ps` saw
/// alike both times; returns how many were compared, of how many, and the disagreements keyed
/// by (pid, fact).
fn observe(scanner: &mut Scanner) -> (usize, usize, BTreeMap<(i32, &'static str), String>) {
    let before = ps();
    let options = ScanOptions {
        max_processes: usize::MAX,
        ..ScanOptions::default()
    };
    let scan = scanner.scan(&options, None).unwrap();
    let after = ps();

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
    let mut compared = 0;
    let mut mismatches = BTreeMap::new();
    for &pid in &stable {
        let Some(process) = ours.get(&pid) else {
            continue;
        };
        let (first, second) = (&before[&pid], &after[&pid]);
        compared += 1;
        let mut check = |what: &'static str, agree: bool, ps_value: String, our_value: String| {
            if !agree {
                mismatches.insert((pid, what), format!("ps {ps_value}, agent {our_value}"));
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
        // A kernel worker's name says what it works on right now.
        let args = as_ps_prints(process);
        let comparable =
            args.is_ascii() && !args.chars().any(char::is_control) && !args.ends_with('…');
        if comparable && !args.starts_with("[kworker") {
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
        let ours = process.state.letter();
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
    (compared, stable.len(), mismatches)
}

#[test]
fn agrees_with_procps_ps() {
    // A command line with an empty argument and runs of spaces; this test binary has many
    // threads.
    let mut spaced = Command::new("sh")
        .args(["-c", "sleep 30", "", "name  with   spaces"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));

    // A live machine changes between two reads (a thread pool grows and shrinks): a fact
    // disagrees only if it disagrees in every one of three observations.
    let mut scanner = Scanner::new("/proc").unwrap();
    let mut persistent: Option<BTreeMap<(i32, &'static str), String>> = None;
    for _ in 0..3 {
        let (compared, stable, mismatches) = observe(&mut scanner);
        eprintln!("compared {compared} of {stable} processes stable across both ps runs");
        assert!(
            compared >= 3 && compared * 10 >= stable * 9,
            "compared only {compared} of {stable}"
        );
        let remaining = match persistent {
            None => mismatches,
            Some(before) => before
                .into_iter()
                .filter(|(key, _)| mismatches.contains_key(key))
                .collect(),
        };
        let settled = remaining.is_empty();
        persistent = Some(remaining);
        if settled {
            break;
        }
    }
    // The odd command line was among those compared, and read alike.
    let listed = ps();
    let every_process = ScanOptions {
        max_processes: usize::MAX,
        ..ScanOptions::default()
    };
    let scan = scanner.scan(&every_process, None).unwrap();
    let pid = spaced.id() as i32;
    let args = "sh -c sleep 30  name  with   spaces";
    assert_eq!(listed[&pid].args, args);
    let ours = scan
        .containers
        .iter()
        .flat_map(|c| &c.processes)
        .find(|p| p.pid == pid);
    assert_eq!(ours.map(|p| p.args.as_str()), Some(args));
    let _ = spaced.kill();
    let _ = spaced.wait();
    let mismatches = persistent.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
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
