//! The snapshot's table: like `ps` with a CONTAINER column, then each container's listening
//! sockets, file fingerprints and what could not be read.

use std::fmt::Write;

use procwatch_crds::{ContainerReport, ProcessInfo, SocketProtocol};

/// Renders the containers as aligned text tables.
pub fn render(containers: &[ContainerReport], vanished: u32) -> String {
    // Cells are made twice (widths, then text) rather than held: a host lists thousands.
    let header = row([
        "CONTAINER",
        "PID",
        "PPID",
        "USER",
        "STAT",
        "THR",
        "CPU(m)",
        "RSS",
        "COMMAND/ARGS",
    ]);
    let processes = || {
        containers.iter().flat_map(|container| {
            container
                .processes
                .iter()
                .map(move |process| process_cells(container, process))
        })
    };
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for cells in processes() {
        for (width, cell) in widths.iter_mut().zip(&cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let right = [false, true, true, false, false, true, true, true, false];
    let mut out = String::new();
    write_row(&mut out, &header, &widths, &right);
    for cells in processes() {
        write_row(&mut out, &cells, &widths, &right);
    }

    let mut listening = vec![row([
        "CONTAINER",
        "PROTO",
        "ADDRESS/PATH",
        "PID",
        "REACHABLE AT",
    ])];
    let mut files = vec![row(["CONTAINER", "PATH", "SIZE", "MODE", "SHA256"])];
    let mut notes = Vec::new();
    for container in containers {
        for socket in &container.listening {
            listening.push(vec![
                container.name.clone(),
                match socket.protocol {
                    SocketProtocol::Tcp => "TCP",
                    SocketProtocol::Udp => "UDP",
                    SocketProtocol::Unix => "Unix",
                }
                .to_string(),
                printable(
                    socket
                        .address
                        .clone()
                        .or_else(|| socket.path.clone())
                        .unwrap_or_default(),
                ),
                socket.pid.map(|pid| pid.to_string()).unwrap_or_default(),
                printable(socket.reachable_at.clone().unwrap_or_default()),
            ]);
        }
        for file in &container.files {
            files.push(vec![
                container.name.clone(),
                printable(file.path.clone()),
                file.size.to_string(),
                file.mode.clone(),
                file.sha256.clone(),
            ]);
        }
        if container.truncated {
            notes.push(format!(
                "{}: {} of {} processes listed (busiest first); some facts left out to stay within limits",
                container.name,
                container.processes.len(),
                container.process_count
            ));
        }
        if !container.libraries.is_empty() {
            notes.push(format!(
                "{}: libraries: {}",
                container.name,
                printable(container.libraries.join(" "))
            ));
        }
        for line in &container.unreadable {
            notes.push(format!(
                "{}: unreadable: {}",
                container.name,
                printable(line.clone())
            ));
        }
    }
    if listening.len() > 1 {
        out.push('\n');
        out.push_str(&aligned(&listening, &[false, false, false, true, false]));
    }
    if files.len() > 1 {
        out.push('\n');
        out.push_str(&aligned(&files, &[false, false, true, false, false]));
    }
    if vanished > 0 {
        notes.push(format!("{vanished} processes exited during the scan"));
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|cell| cell.to_string()).collect()
}

fn process_cells(container: &ContainerReport, process: &ProcessInfo) -> Vec<String> {
    vec![
        container.name.clone(),
        process.pid.to_string(),
        process.ppid.to_string(),
        process
            .user
            .clone()
            .unwrap_or_else(|| process.uid.to_string()),
        process.state.letter().to_string(),
        process.threads.to_string(),
        process.cpu_millicores.to_string(),
        human_bytes(process.memory_bytes),
        printable(if process.args.is_empty() {
            format!("[{}]", process.command)
        } else {
            process.args.clone()
        }),
    ]
}

/// Pads every column but the last to its widest cell; `right` aligns numbers.
fn aligned(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        write_row(&mut out, row, &widths, right);
    }
    out
}

fn write_row(out: &mut String, cells: &[String], widths: &[usize], right: &[bool]) {
    let start = out.len();
    for (column, cell) in cells.iter().enumerate() {
        if column > 0 {
            out.push(' ');
        }
        if column + 1 == cells.len() {
            out.push_str(cell);
        } else if right[column] {
            let _ = write!(out, "{cell:>width$}", width = widths[column]);
        } else {
            let _ = write!(out, "{cell:<width$}", width = widths[column]);
        }
    }
    let trimmed = out[start..].trim_end().len();
    out.truncate(start + trimmed);
    out.push('\n');
}

/// Binary units, one decimal below 10: `512`, `7.5Mi`, `23Mi`, `1.2Gi`.
pub fn human_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["", "Ki", "Mi", "Gi", "Ti"] {
        if value < 1024.0 || unit == "Ti" {
            return if unit.is_empty() {
                format!("{bytes}")
            } else if value < 10.0 {
                format!("{value:.1}{unit}")
            } else {
                format!("{value:.0}{unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at the last unit")
}

/// Control characters (a newline in an argument, a terminal escape) printed as `?`, like `ps`.
fn printable(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_crds::{FileFingerprint, ListeningSocket, ProcessState};

    #[test]
    fn a_ps_like_table_with_sockets_files_and_notes() {
        let containers = vec![ContainerReport {
            name: "nginx".into(),
            container_id: Some("containerd://abc".into()),
            process_count: 3,
            processes: vec![
                ProcessInfo {
                    pid: 7,
                    ppid: 1,
                    uid: 0,
                    user: Some("root".into()),
                    command: "nginx".into(),
                    args: "nginx: master process\x1b[31m".into(),
                    threads: 1,
                    memory_bytes: 7_872_512,
                    ..ProcessInfo::default()
                },
                ProcessInfo {
                    pid: 12,
                    ppid: 7,
                    uid: 101,
                    command: "kworker".into(),
                    state: ProcessState::Running,
                    threads: 12,
                    cpu_millicores: 250,
                    memory_bytes: 0,
                    ..ProcessInfo::default()
                },
            ],
            listening: vec![ListeningSocket {
                protocol: SocketProtocol::Unix,
                address: None,
                path: Some("/run/x.sock".into()),
                reachable_at: Some("/proc/7/root/run/x.sock".into()),
                pid: Some(7),
            }],
            files: vec![FileFingerprint {
                path: "/etc/nginx/nginx.conf".into(),
                size: 643,
                mode: "0644".into(),
                sha256: "ab".into(),
            }],
            truncated: true,
            unreadable: vec!["environ of pid 12: permission denied".into()],
            ..ContainerReport::default()
        }];
        let table = render(&containers, 2);
        assert_eq!(
            table,
            "\
CONTAINER PID PPID USER STAT THR CPU(m)   RSS COMMAND/ARGS
nginx       7    1 root S      1      0 7.5Mi nginx: master process?[31m
nginx      12    7 101  R     12    250     0 [kworker]

CONTAINER PROTO ADDRESS/PATH PID REACHABLE AT
nginx     Unix  /run/x.sock    7 /proc/7/root/run/x.sock

CONTAINER PATH                  SIZE MODE SHA256
nginx     /etc/nginx/nginx.conf  643 0644 ab

nginx: 2 of 3 processes listed (busiest first); some facts left out to stay within limits
nginx: unreadable: environ of pid 12: permission denied
2 processes exited during the scan
"
        );
    }

    #[test]
    fn byte_units() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1023), "1023");
        assert_eq!(human_bytes(1536), "1.5Ki");
        assert_eq!(human_bytes(23_068_672), "22Mi");
        assert_eq!(human_bytes(5 << 40), "5.0Ti");
    }
}
