//! `procwatch-agent`: `snapshot` prints what runs on this machine, per container; `run` reports
//! it to the procwatch operator from inside a pod.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use procwatch_agent::procfs_read::ProcRootError;
use procwatch_agent::reporter::{self, ReportClient, RunConfig};
use procwatch_agent::{ScanOptions, Scanner, table};
use procwatch_crds::constants::{TOKEN_FILE, env};
use procwatch_crds::report::CollectRequest;
use procwatch_crds::{ContainerReport, EnvironmentPolicy, Interval};
use serde::Serialize;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure (the scan or the reporting could not run)
  2  usage error: bad flags, or a --proc-root that is not a proc filesystem";

#[derive(Parser)]
#[command(name = "procwatch-agent", version, about = "Reports, per container, what runs on this machine", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the processes, listening sockets and file fingerprints of this machine, grouped by
    /// container (runtime and short ID, or `host`).
    #[command(after_help = EXIT_CODES)]
    Snapshot(SnapshotArgs),
    /// Inside a pod: scan every interval and report to the procwatch operator.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
}

#[derive(Args)]
struct SnapshotArgs {
    /// The proc filesystem to read.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// How much of each process's environment to show.
    #[arg(long, value_enum, default_value_t = Environment::Names)]
    environment: Environment,
    /// Fingerprint this absolute path inside each container (size, mode, sha256); repeatable.
    #[arg(long = "file", value_name = "PATH", value_parser = absolute_path)]
    files: Vec<String>,
    /// List the distinct executable files mapped by each container's processes.
    #[arg(long)]
    libraries: bool,
    /// Do not count open file descriptors.
    #[arg(long)]
    no_open_files: bool,
    /// Do not list listening sockets.
    #[arg(long)]
    no_sockets: bool,
    /// Do not read each process's exe and cwd.
    #[arg(long)]
    no_paths: bool,
    /// Fingerprint files up to this many bytes; larger ones by size and mode only.
    #[arg(long, default_value_t = procwatch_crds::spec::DEFAULT_MAX_FILE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    max_file_bytes: u64,
    /// List at most this many processes per container, busiest first [default: all].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_processes: Option<u32>,
    /// Measure CPU use over this long (`200ms`, `1s`); `0` scans once and reports no CPU use.
    #[arg(long, default_value = "200ms", value_parser = short_duration)]
    interval: Duration,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// The operator's report endpoint, `https://…/report/v1`.
    #[arg(long, env = env::REPORT_URL)]
    report_url: String,
    /// PEM text of the CA that signed the operator's certificate (the only CA trusted).
    #[arg(long, env = env::CA_PEM, hide_env_values = true)]
    ca_pem: String,
    /// The projected service-account token, read afresh for every report.
    #[arg(long, env = env::TOKEN_FILE, default_value = TOKEN_FILE)]
    token_file: PathBuf,
    /// Scan period until the operator's answer sets it (`15s`, `1m`).
    #[arg(long, env = env::INTERVAL, default_value = "15s")]
    interval: Interval,
    /// What to collect until the operator's answer sets it, as the JSON of the answer's
    /// `collect` (`{"environment":"Names","openFiles":true,…}`) [default: the watch defaults].
    #[arg(long, env = env::COLLECT, value_parser = collect_request)]
    collect: Option<CollectRequest>,
    #[arg(long, env = env::POD_NAME)]
    pod_name: String,
    #[arg(long, env = env::POD_NAMESPACE)]
    pod_namespace: String,
    #[arg(long, env = env::POD_UID)]
    pod_uid: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum Environment {
    None,
    Names,
    Redacted,
}

impl From<Environment> for EnvironmentPolicy {
    fn from(environment: Environment) -> Self {
        match environment {
            Environment::None => EnvironmentPolicy::None,
            Environment::Names => EnvironmentPolicy::Names,
            Environment::Redacted => EnvironmentPolicy::Redacted,
        }
    }
}

/// The snapshot as JSON or YAML.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotOutput {
    scanned_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    vanished_processes: u32,
    containers: Vec<ContainerReport>,
}

/// `RUST_LOG` as `target=level,…,default-level` (no span or field filters: those need
/// `EnvFilter` and its regex engine, which would double the agent's dependencies), else `info`.
fn log_filter() -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in `kubectl logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(log_filter())
        .init();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot(args),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("procwatch-agent: {error:#}");
            let usage = error
                .downcast_ref::<ProcRootError>()
                .is_some_and(|error| matches!(error, ProcRootError::NotProc { .. }));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let mut scanner = Scanner::new(&args.proc_root)?;
    let options = ScanOptions {
        environment: args.environment.into(),
        open_files: !args.no_open_files,
        sockets: !args.no_sockets,
        libraries: args.libraries,
        paths: !args.no_paths,
        files: args.files,
        max_processes: args.max_processes.map_or(usize::MAX, |max| max as usize),
        max_file_bytes: args.max_file_bytes,
    };
    if !args.interval.is_zero() {
        scanner.sample_cpu()?;
        std::thread::sleep(args.interval);
    }
    let scan = scanner.scan(&options, None)?;
    match print_snapshot(args.format, scan) {
        // `snapshot | head` is not a failure.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing the snapshot"),
    }
}

fn print_snapshot(format: Format, scan: procwatch_agent::Scan) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Table => {
            out.write_all(table::render(&scan.containers, scan.vanished).as_bytes())?
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &snapshot_output(scan))?;
            out.write_all(b"\n")?;
        }
        Format::Yaml => serde_yaml::to_writer(&mut out, &snapshot_output(scan))
            .map_err(std::io::Error::other)?,
    }
    out.flush()
}

fn snapshot_output(scan: procwatch_agent::Scan) -> SnapshotOutput {
    SnapshotOutput {
        scanned_at: scan.scanned_at,
        vanished_processes: scan.vanished,
        containers: scan.containers,
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // The workload shares the agent's pid namespace, and by default its uid: without this it
    // could read the agent's token through /proc/<agent>/root and its environment through
    // /proc/<agent>/environ. A non-dumpable process's /proc entries refuse every process
    // lacking CAP_SYS_PTRACE.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("making the agent non-dumpable")?;
    let client = ReportClient::new(&args.report_url, &args.ca_pem, args.token_file)?;
    let config = RunConfig {
        proc_root: args.proc_root,
        pod_name: args.pod_name,
        pod_namespace: args.pod_namespace,
        pod_uid: args.pod_uid,
        interval: args.interval.as_duration(),
        collect: args.collect.unwrap_or_default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("listening for SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping");
        };
        tracing::info!(url = %args.report_url, interval = ?config.interval, "reporting");
        reporter::run(config, client, shutdown).await?;
        Ok(())
    })
}

fn collect_request(json: &str) -> Result<CollectRequest, serde_json::Error> {
    serde_json::from_str(json)
}

fn absolute_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err("must be an absolute path inside the container, like /etc/nginx/nginx.conf".to_string())
    }
}

/// `0`, `250ms`, `2s`, `1m`.
fn short_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 200ms, 2s or 1m");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "" if number == 0 => Ok(Duration::ZERO),
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let required = [
            "procwatch-agent",
            "run",
            "--report-url=https://127.0.0.1/report/v1",
            "--ca-pem=x",
            "--pod-name=p",
            "--pod-namespace=n",
            "--pod-uid=u",
        ];
        let cli = Cli::try_parse_from(required.iter().chain(extra))?;
        match cli.command {
            Command::Run(args) => Ok(args),
            Command::Snapshot(_) => unreachable!("the run subcommand was given"),
        }
    }

    #[test]
    fn collect_options_from_the_webhook_are_parsed() {
        let args = run_args(&[
            r#"--collect={"environment":"Redacted","openFiles":false,"sockets":true,"libraries":true,"files":["/etc/hosts"],"maxProcesses":3}"#,
        ])
        .unwrap();
        assert_eq!(
            args.collect,
            Some(CollectRequest {
                environment: EnvironmentPolicy::Redacted,
                open_files: false,
                sockets: true,
                libraries: true,
                files: vec!["/etc/hosts".into()],
                max_processes: 3,
                max_file_bytes: procwatch_crds::spec::DEFAULT_MAX_FILE_BYTES,
            })
        );
        // Without the option (an agent started by hand): the watch defaults.
        assert_eq!(run_args(&[]).unwrap().collect, None);
    }

    #[test]
    fn collect_options_that_are_not_json_are_a_usage_error() {
        let error = run_args(&["--collect", "libraries"]).err().unwrap();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("--collect"), "{error}");
    }
}
