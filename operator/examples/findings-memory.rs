//! Memory the operator keeps per reporting pod: parses a realistic report (the golden report
//! fixture shaped to 3 containers of 20 processes) per pod, as the report endpoint does, keeps
//! it in a findings store, replaces it with the next report `ROUNDS` times (reports replace
//! the previous one, and the allocator may not reuse every freed block), and prints the growth
//! of this process's resident memory.
//!
//!     cargo run -p procwatch-operator --example findings-memory [PODS] [ROUNDS]

use std::error::Error;

use k8s_openapi::jiff::Timestamp;
use procwatch_crds::report::AgentReport;
use procwatch_operator::metrics::process::ProcessFigures;
use procwatch_operator::report::convert;
use procwatch_operator::report::store::{FindingsStore, PodFindings, PodKey};

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

fn main() -> Result<(), Box<dyn Error>> {
    let pods: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000);
    let rounds: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5);
    let body = serde_json::to_vec(&shaped_report()?)?;
    let store = FindingsStore::default();
    let before = ProcessFigures::of_self()?.resident_bytes;
    for pod in (0..rounds.max(1)).flat_map(|_| 0..pods) {
        let report: AgentReport = serde_json::from_slice(&body)?;
        store.insert(
            PodKey::new("load", &format!("pod-{pod}")),
            PodFindings {
                uid: report.pod_uid,
                received_at: Timestamp::now(),
                containers: convert::containers(report.containers),
                skipped: convert::skipped(report.skipped),
                pids: report.pids,
            },
        );
    }
    let after = ProcessFigures::of_self()?.resident_bytes;
    let per_pod = after.saturating_sub(before) / pods.max(1) as u64;
    println!(
        "{pods} pods, {rounds} reports each of {} bytes ({CONTAINERS} containers of {PROCESSES} \
         processes): resident memory {} -> {} KiB, {} KiB per reporting pod",
        body.len(),
        before / 1024,
        after / 1024,
        per_pod / 1024
    );
    assert_eq!(store.len(), pods);
    Ok(())
}
