//! `/proc/<pid>/stat` (one line of space-separated fields) and `btime` of `/proc/stat`.

use procwatch_crds::ProcessState;

use super::ParseError;

/// The fields of `/proc/<pid>/stat` the scanner uses. Times are in clock ticks, RSS in pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub pid: i32,
    pub comm: String,
    pub state: ProcessState,
    pub ppid: i32,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u32,
    /// Ticks after boot when the process started; with the pid it identifies a process across
    /// scans even when pids are reused.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

impl PidStat {
    /// CPU time used so far, user and system.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime_ticks + self.stime_ticks
    }
}

/// Parses `pid (comm) state ppid …`. The command name may itself contain spaces and `)`, so
/// the fields after it are found from the last `)`.
pub fn parse_pid_stat(text: &[u8]) -> Result<PidStat, ParseError> {
    let err = |detail: &str| ParseError::new("stat", detail);
    let open = text
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| err("no '(' before the command name"))?;
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or_else(|| err("no ')' after the command name"))?;
    let pid = std::str::from_utf8(&text[..open])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err("pid is not a number"))?;
    let comm = String::from_utf8_lossy(&text[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|_| err("fields are not text"))?;
    // fields[0] is field 3 of proc(5) (state), fields[n] is field n + 3; the rest is not used.
    let mut fields = [""; 22];
    let mut count = 0;
    for (slot, field) in fields.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = field;
        count += 1;
    }
    if count < fields.len() {
        return Err(err(&format!(
            "{count} fields after the command name, need 22"
        )));
    }
    let number = |index: usize, name: &str| -> Result<u64, ParseError> {
        fields[index]
            .parse::<u64>()
            .map_err(|_| err(&format!("{name} {:?} is not a number", fields[index])))
    };
    let ppid = fields[1]
        .parse::<i32>()
        .map_err(|_| err("ppid is not a number"))?;
    Ok(PidStat {
        pid,
        comm,
        state: state_from_letter(fields[0]),
        ppid,
        utime_ticks: number(11, "utime")?,
        stime_ticks: number(12, "stime")?,
        threads: u32::try_from(number(17, "num_threads")?).unwrap_or(u32::MAX),
        start_ticks: number(19, "starttime")?,
        rss_pages: number(21, "rss")?,
    })
}

/// The state letter as `ps` shows it in its STAT column.
pub fn state_from_letter(letter: &str) -> ProcessState {
    match letter {
        "R" => ProcessState::Running,
        "S" => ProcessState::Sleeping,
        "D" => ProcessState::DiskSleep,
        "T" => ProcessState::Stopped,
        "t" => ProcessState::Tracing,
        "Z" => ProcessState::Zombie,
        "X" | "x" => ProcessState::Dead,
        "I" => ProcessState::Idle,
        _ => ProcessState::Other,
    }
}

/// The boot time in seconds since the epoch: the `btime` line of `/proc/stat`.
pub fn parse_boot_time(text: &[u8]) -> Result<u64, ParseError> {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| ParseError::new("/proc/stat", "no btime line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &[u8] = b"7 (nginx) S 1 7 7 0 -1 4194560 1500 0 3 0 25 15 0 0 20 0 1 0 5230 11390976 1922 18446744073709551615 1 1 0 0 0 0 0 4096 134234626 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn reads_the_fields_the_scanner_uses() {
        let stat = parse_pid_stat(NGINX).unwrap();
        assert_eq!(
            stat,
            PidStat {
                pid: 7,
                comm: "nginx".into(),
                state: ProcessState::Sleeping,
                ppid: 1,
                utime_ticks: 25,
                stime_ticks: 15,
                threads: 1,
                start_ticks: 5230,
                rss_pages: 1922,
            }
        );
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let text = b"42 (my (odd) name) R 7 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 3 0 99 0 10 0\n";
        let stat = parse_pid_stat(text).unwrap();
        assert_eq!(stat.comm, "my (odd) name");
        assert_eq!(stat.state, ProcessState::Running);
        assert_eq!(
            (stat.ppid, stat.threads, stat.start_ticks, stat.rss_pages),
            (7, 3, 99, 10)
        );
    }

    #[test]
    fn truncated_or_garbled_lines_are_errors() {
        assert!(parse_pid_stat(b"").is_err());
        assert!(parse_pid_stat(b"7 (nginx) S 1 7").is_err());
        assert!(
            parse_pid_stat(b"x (nginx) S 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 3 0 99 0 10 0").is_err()
        );
        assert!(parse_pid_stat(b"7 nginx S 1").is_err());
    }

    #[test]
    fn every_state_letter() {
        for (letter, state) in [
            ("R", ProcessState::Running),
            ("S", ProcessState::Sleeping),
            ("D", ProcessState::DiskSleep),
            ("T", ProcessState::Stopped),
            ("t", ProcessState::Tracing),
            ("Z", ProcessState::Zombie),
            ("X", ProcessState::Dead),
            ("I", ProcessState::Idle),
            ("W", ProcessState::Other),
        ] {
            assert_eq!(state_from_letter(letter), state, "{letter}");
        }
    }

    #[test]
    fn boot_time() {
        let text = b"cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1732838400\nprocesses 7\n";
        assert_eq!(parse_boot_time(text).unwrap(), 1_732_838_400);
        assert!(parse_boot_time(b"cpu 1 2\n").is_err());
    }
}
