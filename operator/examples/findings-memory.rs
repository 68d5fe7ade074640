//! Memory the operator keeps per reporting pod: parses a realistic report (the golden report
//! fixture shaped to 3 containers of 20 processes) per pod, as the report endpoint does, keeps
//! it in a findings store (whole for the `LISTED` pods a status lists, compact for the others),
//! replaces it with the next report `ROUNDS` times (reports replace the previous one, and the
//! allocator may not reuse every freed block), and prints the growth of this process's
//! resident memory for each kind of pod.
//!
//!     cargo run --release -p procwatch-operator --example findings-memory [PODS] [ROUNDS] [LISTED]
//!
//! `LISTED` defaults to 100: 10 watches listing their default 10 pods each.

use std::error::Error;

use k8s_openapi::jiff::Timestamp;
use procwatch_crds::report::AgentReport;
use procwatch_operator::metrics::process::ProcessFigures;
use procwatch_operator::report::convert;
use procwatch_operator::report::store::{self, FindingsStore, PodFindings, PodKey};

const GOLDEN_REPORT: &str = include_str!("../tests/fixtures/report-v1.json");
const CONTAINERS: usize = 3;
const PROCESSES: usize = 20;

/// The golden report with `CONTAINERS` containers of `PROCESSES` processes each, every
/// process a copy of one of the recorded ones under its own pid.
fn shaped_report() -> Result<AgentReport, serde_json::Error> {
    let mut report: AgentReport = serde_json::from_str(GOLDEN_REPORT)?;
    let recorded = report.containers[0].clone();
    report.containers = (0..CONTAINERS)
        .map(|c| {
            let mut container = recorded.clone();
            container.name = format!("container-{c}");
            container.process_count = PROCESSES as u32;
            container.processes = (0..PROCESSES)
                .map(|p| {
                    let mut process = recorded.processes[p % recorded.processes.len()].clone();
                    process.pid = i32::try_from(100 + p).unwrap_or(i32::MAX);
                    process
                })
                .collect();
            container
        })
        .collect();
    Ok(report)
}

/// Keeps `rounds` reports of each pod in `pods` (the second replacing the first...), whole or
/// compact as the report endpoint keeps them for a listed or an unlisted pod.
fn keep(
    store: &FindingsStore,
    body: &[u8],
    pods: std::ops::Range<usize>,
    rounds: usize,
    detailed: bool,
) -> Result<(), Box<dyn Error>> {
    for pod in (0..rounds.max(1)).flat_map(|_| pods.clone()) {
        let report: AgentReport = serde_json::from_slice(body)?;
        let containers = convert::containers(report.containers);
        store.insert(
            PodKey::new("load", &format!("pod-{pod}")),
            PodFindings {
                uid: report.pod_uid,
                received_at: Timestamp::now(),
                containers: if detailed {
                    containers
                } else {
                    store::compact(containers)
                },
                skipped: convert::skipped(report.skipped),
                pids: report.pids,
                detailed,
            },
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = |n: usize, default: usize| -> Result<usize, Box<dyn Error>> {
        Ok(std::env::args()
            .nth(n)
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let pods = arg(1, 1_000)?;
    let rounds = arg(2, 5)?;
    let listed = arg(3, 100)?.min(pods);
    let body = serde_json::to_vec(&shaped_report()?)?;
    let store = FindingsStore::default();
    let resident = || ProcessFigures::of_self().map(|f| f.resident_bytes);
    let before = resident()?;
    keep(&store, &body, 0..listed, rounds, true)?;
    let after_listed = resident()?;
    keep(&store, &body, listed..pods, rounds, false)?;
    let after = resident()?;
    let per_pod = |grown: u64, n: usize| grown / n.max(1) as u64;
    println!(
        "{pods} pods, {listed} of them listed in a status, {rounds} reports each of {} bytes \
         ({CONTAINERS} containers of {PROCESSES} processes): resident memory {} -> {} -> {} KiB; \
         {} KiB per listed pod (whole report), {:.1} KiB per other pod (compact)",
        body.len(),
        before / 1024,
        after_listed / 1024,
        after / 1024,
        per_pod(after_listed.saturating_sub(before), listed) / 1024,
        after.saturating_sub(after_listed) as f64 / (pods - listed).max(1) as f64 / 1024.0,
    );
    assert_eq!(store.len(), pods);
    Ok(())
}
