//! Small stand-ins for the workloads of procwatch's experiments (tests/tests/experiments.rs and
//! config/samples/): real processes with a known shape, so the tests can assert exact facts.
//!
//! ```text
//! procwatch-testprog trainer --workers N [--seconds S]   a launcher and N worker processes
//! procwatch-testprog worker --rank I [--seconds S]       one worker (started by the trainer)
//! procwatch-testprog broker [--sockets N] [--dir-prefix /tmp/flux-]
//!                                                        a Flux-style broker on N unix sockets
//! procwatch-testprog connect PATH                        prints the line a unix socket answers
//! procwatch-testprog threads --count N                   one process of N threads
//! procwatch-testprog bulky --bytes N                     becomes `hold` with N bytes of arguments
//!                                                        and N bytes of environment
//! procwatch-testprog hold [ARG...]                       does nothing until stopped
//! ```
//!
//! - `trainer` re-executes its own binary once per worker as `procwatch-testprog worker --rank I`,
//!   so every worker is a child of the launcher with its own command line (like `torchrun` or
//!   `mpirun` start their ranks). It exits when every worker has, with status 0 if they all
//!   succeeded, and on SIGTERM stops them and exits 0. Without `--seconds` it runs until stopped.
//! - `broker` makes a fresh directory `/tmp/flux-XXXXXX` (mode 0700, like a Flux broker's run
//!   directory), listens on `local-0` … `local-<N-1>` in it and answers every connection with one
//!   line: `flux-broker pid <PID> on <SOCKET PATH>`, then closes it.
//! - `threads`, `bulky` and `hold` are the hostile workload of tests/tests/hostile.rs. `bulky`
//!   re-executes its own binary as `hold` with arguments and variables of 64 KiB each (one
//!   argument may be at most 128 KiB); arguments and environment together may take a quarter of
//!   the stack limit, so raise it first (`ulimit -s 16384` for a MiB of each).
//! - Each role names itself (`/proc/self/comm`): `trainer`, `worker`, `flux-broker`, so the
//!   `command` procwatch reports is the role, not the binary name cut to 15 bytes.
//!
//! Every role prints one line to stdout when it is ready (`kubectl logs` shows it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `println!` that ignores a closed stdout (a reader that went away must not kill a worker).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// What `argv[0]` of every re-executed worker is.
const PROGRAM: &str = "procwatch-testprog";

const USAGE: &str = "usage:
  procwatch-testprog trainer --workers N [--seconds S]
  procwatch-testprog worker --rank I [--seconds S]
  procwatch-testprog broker [--sockets N] [--dir-prefix PREFIX]
  procwatch-testprog connect PATH
  procwatch-testprog threads --count N
  procwatch-testprog bulky --bytes N
  procwatch-testprog hold [ARG...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("trainer") => Options::parse(&args[1..]).and_then(trainer),
        Some("worker") => Options::parse(&args[1..]).and_then(worker),
        Some("broker") => Options::parse(&args[1..]).and_then(broker),
        Some("connect") if args.len() == 2 => connect(Path::new(&args[1])),
        Some("threads") => Options::parse(&args[1..]).and_then(threads),
        Some("bulky") => Options::parse(&args[1..]).and_then(bulky),
        Some("hold") => hold(),
        Some("-h" | "--help") => {
            say!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Error::Usage("missing or unknown subcommand".into())),
    };
    match result {
        Ok(code) => code,
        Err(Error::Usage(message)) => {
            eprintln!("{PROGRAM}: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Io(context, error)) => {
            eprintln!("{PROGRAM}: {context}: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
enum Error {
    Usage(String),
    Io(String, std::io::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |error| Error::Io(context, error)
}

#[derive(Debug, Default)]
struct Options {
    workers: Option<u32>,
    rank: Option<u32>,
    seconds: Option<u64>,
    sockets: Option<u32>,
    dir_prefix: Option<String>,
    count: Option<u32>,
    bytes: Option<u64>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, Error> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
            };
            let number = |text: String| {
                text.parse::<u64>()
                    .map_err(|_| Error::Usage(format!("{flag}: not a number: {text}")))
            };
            match flag.as_str() {
                "--workers" => options.workers = Some(number(value()?)? as u32),
                "--rank" => options.rank = Some(number(value()?)? as u32),
                "--seconds" => options.seconds = Some(number(value()?)?),
                "--sockets" => options.sockets = Some(number(value()?)? as u32),
                "--dir-prefix" => options.dir_prefix = Some(value()?),
                "--count" => options.count = Some(number(value()?)? as u32),
                "--bytes" => options.bytes = Some(number(value()?)?),
                other => return Err(Error::Usage(format!("unknown flag {other}"))),
            }
        }
        Ok(options)
    }
}

/// Sets the calling thread's name, which for the main thread is the process's `comm`.
fn name_process(name: &str) {
    // Best effort: a read-only /proc only costs the nicer name.
    let _ = std::fs::write("/proc/thread-self/comm", name);
}

fn trainer(options: Options) -> Result<ExitCode, Error> {
    name_process("trainer");
    let workers = options
        .workers
        .ok_or_else(|| Error::Usage("trainer needs --workers N".into()))?;
    let exe = std::env::current_exe().map_err(io("finding my own executable"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))?;
    runtime.block_on(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(io("installing the SIGTERM handler"))?;
        let mut children = Vec::new();
        for rank in 0..workers {
            let mut command = std::process::Command::new(&exe);
            command
                .arg0(PROGRAM)
                .args(["worker", "--rank", &rank.to_string()]);
            if let Some(seconds) = options.seconds {
                command.args(["--seconds", &seconds.to_string()]);
            }
            let mut command = tokio::process::Command::from(command);
            command.kill_on_drop(true);
            let child = command
                .spawn()
                .map_err(io(format!("starting worker {rank}")))?;
            children.push(child);
        }
        let pids: Vec<String> = children
            .iter()
            .filter_map(|c| c.id())
            .map(|p| p.to_string())
            .collect();
        say!(
            "trainer pid {} started {workers} workers: {}",
            std::process::id(),
            pids.join(" ")
        );
        let all_done = async {
            let mut failed = 0;
            for (rank, child) in children.iter_mut().enumerate() {
                match child.wait().await {
                    Ok(status) if status.success() => {}
                    Ok(status) => {
                        eprintln!("worker {rank} {status}");
                        failed += 1;
                    }
                    Err(error) => {
                        eprintln!("worker {rank}: {error}");
                        failed += 1;
                    }
                }
            }
            failed
        };
        tokio::select! {
            failed = all_done => {
                say!("trainer done, {failed} worker(s) failed");
                Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            _ = terminate.recv() => {
                say!("trainer stopping on SIGTERM");
                // kill_on_drop ends the workers when `children` drops; reap them first.
                for child in &mut children {
                    let _ = child.kill().await;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn worker(options: Options) -> Result<ExitCode, Error> {
    name_process("worker");
    let rank = options
        .rank
        .ok_or_else(|| Error::Usage("worker needs --rank I".into()))?;
    say!(
        "worker rank {rank} pid {} ppid {}",
        std::process::id(),
        std::os::unix::process::parent_id()
    );
    let start = Instant::now();
    let deadline = options.seconds.map(Duration::from_secs);
    let mut step: u64 = 0;
    let mut state: u64 = u64::from(rank) + 1;
    loop {
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            say!("worker rank {rank} finished after {step} steps");
            return Ok(ExitCode::SUCCESS);
        }
        // A "training step": a few milliseconds of arithmetic, then rest for the second.
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(2) {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(state);
        step += 1;
        if step.is_multiple_of(600) {
            say!("worker rank {rank} step {step}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The line a broker answers on `path`.
fn greeting(pid: u32, path: &Path) -> String {
    format!("flux-broker pid {pid} on {}\n", path.display())
}

fn broker(options: Options) -> Result<ExitCode, Error> {
    name_process("flux-broker");
    let sockets = options.sockets.unwrap_or(4);
    let prefix = options.dir_prefix.unwrap_or_else(|| "/tmp/flux-".into());
    let dir = make_run_dir(&prefix)?;
    let pid = std::process::id();
    let mut threads = Vec::new();
    for index in 0..sockets {
        let path = dir.join(format!("local-{index}"));
        let listener =
            UnixListener::bind(&path).map_err(io(format!("binding {}", path.display())))?;
        threads.push(std::thread::spawn(move || serve(listener, pid, &path)));
    }
    say!("flux-broker pid {pid} listening in {}", dir.display());
    for thread in threads {
        let _ = thread.join();
    }
    Ok(ExitCode::FAILURE)
}

/// A new directory `<prefix>XXXXXX`, mode 0700, like `mkdtemp`.
fn make_run_dir(prefix: &str) -> Result<PathBuf, Error> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seed = nanos ^ (u64::from(std::process::id()) << 32);
    for _ in 0..100 {
        let mut name = String::from(prefix);
        for _ in 0..6 {
            // splitmix64 steps
            seed = seed.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^= z >> 31;
            name.push(ALPHABET[(z % ALPHABET.len() as u64) as usize] as char);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&name) {
            Ok(()) => return Ok(PathBuf::from(name)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(Error::Io(format!("creating {name}"), error)),
        }
    }
    Err(Error::Io(
        format!("creating {prefix}XXXXXX"),
        std::io::Error::other("100 names taken"),
    ))
}

fn serve(listener: UnixListener, pid: u32, path: &Path) {
    let line = greeting(pid, path);
    for stream in listener.incoming() {
        match stream {
            Ok(mut stream) => {
                if let Err(error) = stream.write_all(line.as_bytes()) {
                    eprintln!("{}: answering: {error}", path.display());
                }
            }
            Err(error) => {
                eprintln!("{}: accept: {error}", path.display());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Parks the calling thread for good (spurious wake-ups park it again).
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn threads(options: Options) -> Result<ExitCode, Error> {
    name_process("threads");
    let count = options
        .count
        .ok_or_else(|| Error::Usage("threads needs --count N".into()))?;
    // The main thread is one of them. Small stacks: thousands of threads, each touching a page.
    for index in 1..count {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| park_forever())
            .map_err(io(format!("starting thread {index}")))?;
    }
    say!("threads pid {} runs {count} threads", std::process::id());
    park_forever()
}

fn bulky(options: Options) -> Result<ExitCode, Error> {
    /// Below the kernel's limit of 128 KiB per argument or variable.
    const PIECE: u64 = 64 * 1024;
    let bytes = options
        .bytes
        .ok_or_else(|| Error::Usage("bulky needs --bytes N".into()))?;
    let exe = std::env::current_exe().map_err(io("finding my own executable"))?;
    let mut command = std::process::Command::new(exe);
    command.arg0(PROGRAM).arg("hold");
    let mut left = bytes;
    for index in 0.. {
        if left == 0 {
            break;
        }
        let piece = left.min(PIECE) as usize;
        command.arg("a".repeat(piece));
        command.env(format!("BULK_{index}"), "e".repeat(piece));
        left -= piece as u64;
    }
    // Returns only when the exec failed (E2BIG without a larger stack limit).
    let error = command.exec();
    Err(Error::Io(
        format!("re-executing as hold with {bytes} bytes of arguments and environment"),
        error,
    ))
}

fn hold() -> Result<ExitCode, Error> {
    name_process("hold");
    say!("hold pid {}", std::process::id());
    park_forever()
}

fn connect(path: &Path) -> Result<ExitCode, Error> {
    let stream =
        UnixStream::connect(path).map_err(io(format!("connecting to {}", path.display())))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("setting a read timeout"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io(format!("reading from {}", path.display())))?;
    print!("{line}");
    Ok(if line.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Options::parse(&args(&["--workers"])).is_err());
        assert!(Options::parse(&args(&["--workers", "x"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        let o = Options::parse(&args(&["--workers", "3", "--seconds", "9"])).unwrap();
        assert_eq!((o.workers, o.seconds), (Some(3), Some(9)));
    }
}
