//! End to end on the local test cluster: the API server stops for 30 s while a watch is Ready
//! and its agents report, then starts again. The operator must ride it out in one process: it
//! keeps answering admission reviews from its caches meanwhile, leads again once the API
//! server is back, gives a pod created then its agent, and its status catches up with every
//! pod. Prints how long each step of the recovery took (tests/README.md records them).
//!
//! Needs the local cluster (tests/cluster), because it stops that cluster's API server
//! (`tests/cluster/apiserver`), and the image `localhost/procwatch:dev`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use procwatch_crds::ProcessWatch;
use procwatch_e2e::processwatch::{
    apply_watch, busybox_pod, describe_status, has_agent, wait_for_watch,
};
use procwatch_e2e::{Cluster, Operator, TestNamespace, Wait, wait_for, webhook_injects};

#[path = "../support/skip.rs"]
mod support;

const OUTAGE: Duration = Duration::from_secs(30);
/// Progress during and after the outage is polled this often: figures are within it.
const POLL: Duration = Duration::from_millis(200);
const SCRIPT: &str = "sleep 3600 & sleep 3601 & wait";

const WATCH: &str = r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {name: sleepers}
spec:
  selector: {matchLabels: {app: sleeper}}
  interval: 2s
"#;

/// The operator's one pod: its name, its container's restart count and ID.
async fn operator_process(operator: &Operator) -> anyhow::Result<(String, i32, String)> {
    let pods = operator.pods().await?;
    let [pod] = pods.as_slice() else {
        anyhow::bail!("{} operator pods, expected one", pods.len());
    };
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .context("operator pod without container status")?;
    Ok((
        pod.metadata.name.clone().unwrap_or_default(),
        status.restart_count,
        status.container_id.clone().unwrap_or_default(),
    ))
}

/// Every named pod is listed and counted as reporting. One of them was created after the outage,
/// so such a status was written after it; and a leader counts a pod as reporting only from a
/// report within the watch's stale time, which the outage outlasts, so the others reported
/// after it too. (`reportedAt` tells no more: it moves only every few minutes.)
fn caught_up(pw: &ProcessWatch, names: &[String]) -> bool {
    let Some(status) = &pw.status else {
        return false;
    };
    let listed = |name: &String| status.pods.iter().any(|p| &p.name == name);
    status.selected_pods == names.len() as u32
        && status.reporting_pods == names.len() as u32
        && names.iter().all(listed)
}

async fn running_agents(ns: &TestNamespace, names: &[&str]) -> anyhow::Result<()> {
    let pods: Api<Pod> = ns.api();
    for name in names {
        wait_for(
            &format!("pod {name} running with the agent"),
            Duration::from_secs(60),
            || async {
                let pod = pods.get(name).await?;
                if !has_agent(&pod) {
                    return Ok(Wait::Fail(anyhow::anyhow!(
                        "{name} was created without the agent"
                    )));
                }
                let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
                Ok(if phase == "Running" {
                    Wait::Done(())
                } else {
                    Wait::not_yet(phase)
                })
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn operator_rides_out_an_api_server_outage() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    if !cluster.is_local() {
        support::skip("stops the API server: needs the local test cluster (tests/cluster)");
        return Ok(());
    }
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("outage").await?;
    apply_watch(&ns, WATCH, "sleepers").await?;
    ns.apply_yaml(&busybox_pod("before-1", "sleeper", SCRIPT))
        .await?;
    ns.apply_yaml(&busybox_pod("before-2", "sleeper", SCRIPT))
        .await?;
    running_agents(&ns, &["before-1", "before-2"]).await?;
    wait_for_watch(
        &ns,
        "sleepers",
        "both agents reporting, Ready",
        Duration::from_secs(60),
        |pw| {
            let status = pw.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (status.reporting_pods == 2 && ready).then_some(())
        },
    )
    .await?;
    let before = operator_process(&operator).await?;
    let https = operator.https_client().await?;
    ensure!(
        operator.readyz().await?.1.contains("leader"),
        "the operator does not lead before the outage"
    );

    let stopping = Instant::now();
    let outage = cluster.stop_api_server().await?;
    let stopped = Instant::now();
    println!(
        "kube-apiserver stopped in {:.1}s",
        (stopped - stopping).as_secs_f64()
    );
    // Throughout the outage: the process answers, and the webhook injects from its caches.
    let mut reviews = 0;
    let mut standby_after = None;
    while stopped.elapsed() < OUTAGE {
        ensure!(
            webhook_injects(&https, ns.name(), "during-outage", "sleeper").await?,
            "the webhook did not inject the agent {:.1}s into the outage",
            stopped.elapsed().as_secs_f64()
        );
        reviews += 1;
        let (_, readyz) = operator.readyz().await?;
        if standby_after.is_none() && readyz.contains("standby") {
            standby_after = Some(stopped.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    println!(
        "during the outage: {reviews} admission reviews answered with the agent; the operator \
         stood by {} after the API server stopped",
        standby_after.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
    );
    ensure!(
        standby_after.is_some(),
        "the leader kept leading through a {}s outage",
        OUTAGE.as_secs()
    );

    let starting = Instant::now();
    outage.end().await?;
    let back = Instant::now();
    println!(
        "kube-apiserver ready {:.1}s after its start",
        (back - starting).as_secs_f64()
    );
    let leads = loop {
        if operator.readyz().await?.1.contains("leader") {
            break back.elapsed();
        }
        ensure!(
            back.elapsed() < Duration::from_secs(60),
            "the operator does not lead 60s after the API server is back"
        );
        tokio::time::sleep(POLL).await;
    };
    // The API server calls the webhook for this pod: without an answer it would be created
    // without the agent (failurePolicy: Ignore).
    ns.apply_yaml(&busybox_pod("after", "sleeper", SCRIPT))
        .await?;
    let created = back.elapsed();
    let pods: Api<Pod> = ns.api();
    ensure!(
        has_agent(&pods.get("after").await?),
        "a pod created after the outage has no agent"
    );
    running_agents(&ns, &["after"]).await?;

    let names: Vec<String> = ["before-1", "before-2", "after"].map(String::from).to_vec();
    let pws: Api<ProcessWatch> = ns.api();
    let caught = loop {
        let pw = pws.get("sleepers").await?;
        if caught_up(&pw, &names) {
            break back.elapsed();
        }
        ensure!(
            back.elapsed() < Duration::from_secs(120),
            "the status did not catch up 120s after the API server was back: {}",
            describe_status(&pw)
        );
        tokio::time::sleep(POLL).await;
    };
    println!(
        "after the API server was back: leading again {:.1}s, a new pod created with the agent \
         {:.1}s, the status lists all 3 pods with fresh reports {:.1}s",
        leads.as_secs_f64(),
        created.as_secs_f64(),
        caught.as_secs_f64()
    );

    let after = operator_process(&operator).await?;
    ensure!(
        after == before,
        "the operator process changed over the outage (pod, restarts, container): before \
         {before:?}, after {after:?}"
    );
    let logs = operator.logs().await;
    let milestones = [
        "stepped down",
        "controller stopped",
        "became the leader",
        "starting the controller",
    ];
    for line in logs
        .lines()
        .filter(|line| milestones.iter().any(|m| line.contains(m)))
    {
        println!("operator: {}", line.trim());
    }
    ensure!(
        logs.contains("stepped down") && logs.matches("became the leader").count() >= 2,
        "the operator did not step down and lead again in the same process:\n{logs}"
    );
    ns.finish();
    operator.finish();
    Ok(())
}
