//! Issue 4, end to end on a real cluster: the operator deployed from `config/` (loopback
//! overlay), injecting the agent, the agent reporting, the report endpoint refusing what it must,
//! leader takeover and eviction of old pods.
//!
//! Needs a cluster with the image `localhost/procwatch:dev` (tests/run builds it; see
//! tests/README.md) where the loopback overlay works: host network, API server and webhook on
//! 127.0.0.1. Each test deploys the operator and removes it after ([`Operator`]); they run one
//! at a time (the operator is cluster-wide).

use std::time::{Duration, Instant};

use anyhow::ensure;
use procwatch_e2e::{Cluster, Operator};

/// 1. The operator deployed from config/ through the loopback overlay reaches Ready, its RBAC
///    suffices (no "forbidden" in its log), it made its certificate and leads.
#[tokio::test]
async fn operator_deploys_from_config_and_is_ready() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let t0 = Instant::now();
    let operator = Operator::deploy(&cluster).await?;
    println!(
        "operator Ready {:.1}s after kubectl apply -k",
        t0.elapsed().as_secs_f64()
    );

    // The controller starts once it leads; give the log a moment to show it.
    procwatch_e2e::wait_for(
        "the operator to lead and sync its caches",
        Duration::from_secs(30),
        || async {
            let logs = operator.logs().await;
            Ok(
                if logs.contains("leading") && logs.contains("pod cache synced") {
                    procwatch_e2e::Wait::Done(())
                } else {
                    procwatch_e2e::Wait::not_yet(logs.lines().last().unwrap_or("").to_owned())
                },
            )
        },
    )
    .await?;
    let forbidden = operator.forbidden_log_lines().await;
    ensure!(
        forbidden.is_empty(),
        "RBAC refusals in the operator's log:\n{}",
        forbidden.join("\n")
    );
    let metrics = operator.metrics().await?;
    ensure!(
        metrics.contains("procwatch_"),
        "no procwatch metrics:\n{metrics}"
    );
    operator.finish();
    Ok(())
}
