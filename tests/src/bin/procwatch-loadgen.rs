//! `procwatch-loadgen`: puts N simulated pods and their agents on the operator deployed from
//! `config/overlays/loopback` and prints what that costs, as a table and as JSON. Run it
//! through `tests/load/run`, which brings the test cluster up around it.
//!
//!     procwatch-loadgen [--pods 1000] [--watches 10] [--interval 15s] [--duration 5m] [--json FILE]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use procwatch_e2e::load::{self, LoadConfig};
use procwatch_e2e::{Cluster, Operator};

#[derive(Parser)]
#[command(about = "Load the procwatch operator with simulated pods and agents; print the costs")]
struct Args {
    /// Simulated pods, each with an agent reporting 3 containers of 20 processes.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Watches, each selecting an equal share of the pods.
    #[arg(long, default_value_t = 10)]
    watches: usize,
    /// The watches' interval (`15s`, `1m`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// The steady state measured once every pod reports (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    duration: Duration,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `90`, `90s`, `5m` or `1h` into a duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a whole number with s, m or h"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?}: the unit is s, m or h")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LoadConfig {
        pods: args.pods,
        watches: args.watches,
        interval: args.interval,
        duration: args.duration,
    };
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let figures = load::run(&cluster, &config).await?;
    operator.finish();
    println!("{}", figures.table());
    let json = serde_json::to_string_pretty(&figures)?;
    println!("{json}");
    if let Some(path) = args.json {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
