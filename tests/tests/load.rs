//! The load harness in small (50 pods, 5 watches, 60 s of steady state): what must hold at any
//! speed. Every simulated pod reaches its watch's status, no report is refused, no watch's
//! status is written more than once a second nor at all when its pods change nothing, and the
//! operator reviews each pod's token once, not once per report. Timings are the benchmark's (`tests/load/run`, BENCHMARKS.md), not this
//! test's.

use std::time::Duration;

use anyhow::ensure;
use procwatch_e2e::load::{self, LoadConfig};
use procwatch_e2e::{Cluster, Operator};

#[tokio::test]
async fn fifty_simulated_agents_report_without_refusal_or_write_storm() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let config = LoadConfig {
        pods: 50,
        watches: 5,
        interval: Duration::from_secs(15),
        duration: Duration::from_secs(60),
    };
    let figures = load::run(&cluster, &config).await?;
    println!("{}", figures.table());

    ensure!(
        figures.admitted_without_agent == 0,
        "{} pods admitted without the agent",
        figures.admitted_without_agent
    );
    ensure!(
        figures.pods_reporting == config.pods as u64,
        "{} of {} pods in the statuses",
        figures.pods_reporting,
        config.pods
    );
    let refused: Vec<_> = figures
        .reports_by_outcome
        .iter()
        .filter(|(outcome, _)| *outcome != "200")
        .collect();
    ensure!(refused.is_empty(), "reports not accepted: {refused:?}");
    let operator_refused: Vec<_> = figures
        .operator_reports_by_result
        .iter()
        .filter(|(result, _)| *result != "accepted")
        .collect();
    ensure!(
        operator_refused.is_empty(),
        "the operator counted reports it did not accept: {operator_refused:?}"
    );
    // Counted over the whole steady state, so the API watch's delivery jitter cannot matter.
    let busiest_writes = figures.busiest_watch_writes_per_second * figures.steady_seconds;
    ensure!(
        busiest_writes <= figures.steady_seconds.ceil() + 1.0,
        "{busiest_writes:.0} status writes of one watch in {:.0} s",
        figures.steady_seconds
    );
    // The pods of every watch but the probe's report the same facts each time: their
    // statuses are not rewritten for times or pid counts alone.
    ensure!(
        figures.unchanged_status_writes_per_watch_per_second == 0.0,
        "watches whose pods changed nothing were written {:.3} times a second:\n{}",
        figures.unchanged_status_writes_per_watch_per_second,
        figures.unchanged_status_writes.join("\n")
    );
    ensure!(
        figures.token_reviews_total >= 1.0 && figures.token_reviews_total <= config.pods as f64,
        "{} TokenReviews for {} pods",
        figures.token_reviews_total,
        config.pods
    );
    operator.finish();
    Ok(())
}
