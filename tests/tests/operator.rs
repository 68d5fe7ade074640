//! End to end on a real cluster: the operator deployed from `config/` (loopback
//! overlay), injecting the agent, the agent reporting, the report endpoint refusing what it must,
//! leader takeover, eviction of old pods, and a selected Job that still completes.
//!
//! Needs a cluster with the image `localhost/procwatch:dev` (tests/run builds it; see
//! tests/README.md) where the loopback overlay works: host network, API server and webhook on
//! 127.0.0.1. Each test deploys the operator and removes it after ([`Operator`]); they run one
//! at a time (the operator is cluster-wide).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{AGENT_CONTAINER_NAME, TOKEN_AUDIENCE, WATCHES_ANNOTATION, env};
use procwatch_crds::report::{self, AgentReport, CollectRequest, ReportResponse};
use procwatch_e2e::processwatch::{
    self, agent_token_volume, apply_watch, busybox_deployment, busybox_pod, container_id,
    describe_status, has_agent, metric_value, pw_cells, pw_table, pw_yaml, wait_for_watch,
};
use procwatch_e2e::{Cluster, Operator, REPORT_URL, TestNamespace, Wait, wait_for};

/// The sampling interval of the tests' watches (`interval: 2s`).
const INTERVAL: Duration = Duration::from_secs(2);

/// A watch named `name` selecting `app=<app>`, every 2 s.
fn watch_yaml(name: &str, app: &str, existing_pods: &str) -> String {
    processwatch::watch_yaml(
        name,
        app,
        "2s",
        &format!("  attach: {{existingPods: {existing_pods}}}"),
    )
}

/// A Deployment of busybox pods on the host network whose container `app` runs a known process
/// tree: `sh -c 'sleep 3600 & sleep 3601 & wait'`.
fn sleeper_deployment(name: &str, app: &str, replicas: u32) -> String {
    busybox_deployment(name, app, replicas, "sleep 3600 & sleep 3601 & wait")
}

/// A bare busybox pod labelled `app=<app>`.
fn bare_pod(name: &str, app: &str) -> String {
    busybox_pod(name, app, "sleep 3600 & sleep 3601 & wait")
}

/// The common start of the tests: the operator deployed, a fresh namespace, and in it the watch
/// `sleepers` (pods labelled `app: sleeper`, old pods reported) observed by the operator.
async fn operator_watching_sleepers(
    namespace_prefix: &str,
) -> anyhow::Result<(Cluster, Operator, TestNamespace)> {
    operator_watching(namespace_prefix, "sleepers", "sleeper").await
}

/// The operator deployed, a fresh namespace, and in it the watch `name` (pods labelled
/// `app: <app>`, old pods reported) observed by the operator.
async fn operator_watching(
    namespace_prefix: &str,
    name: &str,
    app: &str,
) -> anyhow::Result<(Cluster, Operator, TestNamespace)> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace(namespace_prefix).await?;
    apply_watch(&ns, &watch_yaml(name, app, "Report"), name).await?;
    Ok((cluster, operator, ns))
}

fn is_running(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .iter()
            .flatten()
            .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// Waits until `count` pods with `labels` run, all containers ready, none terminating.
async fn running_pods(ns: &TestNamespace, labels: &str, count: usize) -> anyhow::Result<Vec<Pod>> {
    wait_for(
        &format!("{count} running pods {labels}"),
        Duration::from_secs(120),
        || async {
            let live = ns.live_pods(labels).await?;
            let running = live.iter().filter(|p| is_running(p)).count();
            Ok(if running == count && live.len() == count {
                Wait::Done(live)
            } else {
                Wait::not_yet(format!("{running} running of {}", live.len()))
            })
        },
    )
    .await
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

/// One row of `ps -o pid,ppid,comm,args` as a container of the shared-PID pod sees it.
#[derive(Debug)]
struct PsRow {
    pid: i32,
    ppid: i32,
    comm: String,
    args: String,
}

async fn ps(ns: &TestNamespace, pod: &str, container: &str) -> anyhow::Result<Vec<PsRow>> {
    let out = ns
        .exec(pod, container, &["ps", "-o", "pid,ppid,comm,args"])
        .await?;
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let mut next = || parts.next().context("short ps line");
            let pid = next()?.parse()?;
            let ppid = next()?.parse()?;
            let comm = next()?.to_string();
            let args = parts.collect::<Vec<_>>().join(" ");
            Ok(PsRow {
                pid,
                ppid,
                comm,
                args,
            })
        })
        .collect()
}

/// A warning line (`REASON OBJECT MESSAGE`) of the kubelet failing a mount because its watch of
/// the referenced secret or configmap did not sync within its fixed one-second wait (it retries).
fn is_kubelet_cache_sync_retry(line: &str) -> bool {
    line.starts_with("FailedMount ")
        && line.contains("failed to sync ")
        && line.contains(" cache: timed out waiting for the condition")
}

/// 1. The operator deployed from config/ through the loopback overlay reaches Ready, its RBAC
///    suffices (no "forbidden" in its log), it leads and serves metrics.
#[tokio::test]
async fn operator_deploys_from_config_and_is_ready() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let t0 = Instant::now();
    let operator = Operator::deploy(&cluster).await?;
    println!(
        "operator Ready {:.1}s after kubectl apply -k",
        t0.elapsed().as_secs_f64()
    );
    wait_for(
        "the operator to lead and sync its caches",
        Duration::from_secs(30),
        || async {
            let logs = operator.logs().await;
            Ok(
                if logs.contains("leading") && logs.contains("pod cache synced") {
                    Wait::Done(())
                } else {
                    Wait::not_yet(logs.lines().last().unwrap_or("").to_owned())
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
    // Nothing in its namespace went wrong. Two kinds of warning are transient retries of the
    // cluster, not faults of our manifests: a readiness probe may fail while caches sync, and a
    // token mount may fail once when the kubelet asks for the secret before the API server's node
    // authorizer has seen the new pod (kubernetes/kubernetes#128910; seen in CI). The pod reached
    // Ready above, so the kubelet's retry succeeded.
    let warnings = cluster
        .kubectl(&[
            "-n",
            procwatch_e2e::OPERATOR_NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "type=Warning",
            "-o",
            "custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
            "--no-headers",
        ])
        .await?;
    let unexpected: Vec<&str> = warnings
        .lines()
        .filter(|l| !l.starts_with("Unhealthy ") && !is_kubelet_cache_sync_retry(l))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "warning events in {}:\n{}",
        procwatch_e2e::OPERATOR_NAMESPACE,
        unexpected.join("\n")
    );
    let metrics = operator.metrics().await?;
    ensure!(
        metric_value(
            &metrics,
            "procwatch_admissions_total",
            &[("outcome", "injected")]
        )
        .is_some(),
        "no admission metrics:\n{metrics}"
    );
    operator.finish();
    Ok(())
}

/// 2. A Deployment selected by a watch gets shared-PID pods with the agent; they run; the real
///    processes of the app container, attributed to it by name, appear in `kubectl get pw -o
///    yaml` and in the columns of `kubectl get pw`, and in the per-container metrics.
#[tokio::test]
async fn selected_deployment_reports_its_processes() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching_sleepers("op-report").await?;

    let t_apply = Instant::now();
    ns.apply_yaml(&sleeper_deployment("sleeper", "sleeper", 2))
        .await?;
    let pods = running_pods(&ns, "app=sleeper", 2).await?;
    println!(
        "2 pods running {:.1}s after applying the Deployment",
        t_apply.elapsed().as_secs_f64()
    );

    // The webhook's work, on the pods as the API server stored them.
    for pod in &pods {
        let spec = pod.spec.as_ref().context("pod spec")?;
        ensure!(
            spec.share_process_namespace == Some(true),
            "{}: no shareProcessNamespace",
            pod_name(pod)
        );
        ensure!(has_agent(pod), "{}: no agent container", pod_name(pod));
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        ensure!(
            annotations.get(WATCHES_ANNOTATION).map(String::as_str) == Some("sleepers"),
            "{}: annotations {annotations:?}",
            pod_name(pod)
        );
        // The projected token (audience procwatch) is mounted into the agent only.
        let token_volume = agent_token_volume(spec)
            .context("no projected token volume with audience procwatch")?;
        // The agent starts with what the watch collects (its defaults here), as the API server
        // stored it.
        let agent = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == AGENT_CONTAINER_NAME)
            .context("no agent container")?;
        let collect = agent
            .env
            .iter()
            .flatten()
            .find(|e| e.name == env::COLLECT)
            .and_then(|e| e.value.as_deref())
            .with_context(|| format!("{}: no {} in the agent", pod_name(pod), env::COLLECT))?;
        let collect: CollectRequest = serde_json::from_str(collect)?;
        ensure!(collect == CollectRequest::default(), "{collect:?}");
        for c in &spec.containers {
            let mounts_it = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == token_volume.name);
            ensure!(
                mounts_it == (c.name == AGENT_CONTAINER_NAME),
                "container {} mounts the token: {mounts_it}",
                c.name
            );
        }
    }

    // Reports reach the status.
    let pw = wait_for_watch(
        &ns,
        "sleepers",
        "both pods reporting 3 processes each",
        Duration::from_secs(60),
        |pw| {
            let s = pw.status.as_ref()?;
            (s.reporting_pods == 2
                && s.pods.len() == 2
                && s.processes == 6
                && s.pods.iter().all(|p| p.reported_at.is_some()))
            .then(|| pw.clone())
        },
    )
    .await?;
    println!(
        "apply -> both pods' findings in status: {:.1}s",
        t_apply.elapsed().as_secs_f64()
    );
    println!("status: {}", describe_status(&pw));

    // What kubectl -o yaml shows, checked against what ps sees in the pod.
    let pw: ProcessWatch = pw_yaml(&ns, "sleepers").await?;
    let status = pw.status.context("no status")?;
    ensure!(
        (
            status.selected_pods,
            status.attached_pods,
            status.reporting_pods
        ) == (2, 2, 2),
        "{status:?}"
    );
    ensure!(
        status.needs_restart.is_empty(),
        "{:?}",
        status.needs_restart
    );
    for pod in &pods {
        let name = pod_name(pod);
        let report = status
            .pods
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("pod {name} not in status.pods"))?;
        ensure!(report.uid == pod.metadata.uid, "uid of {name}");
        let names: Vec<&str> = report.containers.iter().map(|c| c.name.as_str()).collect();
        ensure!(
            names == ["app"],
            "{name}: containers {names:?} (only the app, never the agent)"
        );
        let app = &report.containers[0];
        let real_id = container_id(pod, "app").context("app container ID")?;
        ensure!(
            real_id.starts_with("containerd://") && app.container_id.as_deref() == Some(&real_id),
            "{name}: containerID {:?} vs {real_id}",
            app.container_id
        );
        ensure!(app.process_count == 3, "{name}: {app:?}");

        let truth = ps(&ns, name, "app").await?;
        let find = |args: &str| {
            truth
                .iter()
                .find(|r| r.args == args)
                .with_context(|| format!("{name}: ps shows no {args:?}: {truth:?}"))
        };
        let sh = find("sh -c sleep 3600 & sleep 3601 & wait")?;
        let pause = truth
            .iter()
            .find(|r| r.pid == 1)
            .context("no pid 1 in ps")?;
        ensure!(
            pause.comm == "pause",
            "{name}: pid 1 is {pause:?}, not the pause process"
        );
        let agent = truth
            .iter()
            .find(|r| r.comm.starts_with("procwatch-agent") || r.args.contains("procwatch-agent"))
            .with_context(|| format!("{name}: ps shows no agent: {truth:?}"))?;
        for args in ["sleep 3600", "sleep 3601"] {
            let row = find(args)?;
            let listed = app
                .processes
                .iter()
                .find(|p| p.pid == row.pid)
                .with_context(|| format!("{name}: pid {} ({args}) not listed", row.pid))?;
            ensure!(
                listed.command == "sleep" && listed.args == args && listed.ppid == sh.pid,
                "{name}: {listed:?} vs ps {row:?}"
            );
            ensure!(row.ppid == sh.pid, "{name}: ps {row:?}");
        }
        let listed_sh = app
            .processes
            .iter()
            .find(|p| p.pid == sh.pid)
            .with_context(|| format!("{name}: the shell pid {} not listed", sh.pid))?;
        ensure!(
            listed_sh.command == "sh" && listed_sh.args == sh.args,
            "{listed_sh:?}"
        );
        for c in &report.containers {
            for p in &c.processes {
                ensure!(
                    p.pid != agent.pid && p.pid != pause.pid,
                    "{name}: container {} lists pid {} (agent {}, pause {})",
                    c.name,
                    p.pid,
                    agent.pid,
                    pause.pid
                );
                ensure!(!p.command.contains("procwatch"), "{name}: lists {p:?}");
            }
        }
        println!(
            "{name}: app = sh {} -> sleep {}; agent pid {} and pause pid 1 under no container",
            sh.pid,
            app.processes
                .iter()
                .filter(|p| p.command == "sleep")
                .map(|p| p.pid.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            agent.pid
        );
    }
    let summary = status
        .summary
        .iter()
        .find(|s| s.container == "app")
        .context("no summary for app")?;
    ensure!(
        summary.pods == 2 && summary.processes == 6 && summary.commands == ["sh", "sleep"],
        "{summary:?}"
    );
    ensure!(status.summary.len() == 1, "{:?}", status.summary);

    // The columns of kubectl get pw.
    let rows = pw_table(&ns).await?;
    ensure!(rows.len() == 1, "{rows:?}");
    let row = &rows[0];
    ensure!(
        pw_cells(row) == ["sleepers", "2", "2", "2", "6", "True", "", ""],
        "kubectl get pw: {row:?}"
    );
    ensure!(row.contains_key("AGE"), "{row:?}");

    // Per-container gauges. The `ps` this test ran in the app container through `kubectl exec`
    // may be in the latest report (it counts as the container's process while it runs), so wait
    // for a report without it.
    let metrics = wait_for(
        "the per-container gauges of both pods, 3 processes each",
        Duration::from_secs(15),
        || async {
            let metrics = operator.metrics().await?;
            for pod in &pods {
                let labels = [
                    ("namespace", ns.name()),
                    ("watch", "sleepers"),
                    ("pod", pod_name(pod)),
                    ("container", "app"),
                ];
                for metric in [
                    "procwatch_container_memory_bytes",
                    "procwatch_container_cpu_millicores",
                ] {
                    metric_value(&metrics, metric, &labels)
                        .with_context(|| format!("no {metric} for {}", pod_name(pod)))?;
                }
                let processes = metric_value(&metrics, "procwatch_container_processes", &labels)
                    .with_context(|| {
                        format!("no procwatch_container_processes for {}", pod_name(pod))
                    })?;
                if processes != 3.0 {
                    return Ok(Wait::not_yet(format!(
                        "procwatch_container_processes = {processes} for {}",
                        pod_name(pod)
                    )));
                }
            }
            Ok(Wait::Done(metrics))
        },
    )
    .await?;
    ensure!(
        metric_value(
            &metrics,
            "procwatch_container_processes",
            &[("container", AGENT_CONTAINER_NAME)]
        )
        .is_none(),
        "the agent has a gauge"
    );
    let forbidden = operator.forbidden_log_lines().await;
    ensure!(forbidden.is_empty(), "{forbidden:?}");
    ns.finish();
    operator.finish();
    Ok(())
}

/// 3. A pod that no watch selects, in a namespace with a watch, is left as it was submitted.
#[tokio::test]
async fn unselected_pod_is_untouched() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching_sleepers("op-untouched").await?;
    let skipped = |m: &str| {
        metric_value(
            m,
            "procwatch_admissions_total",
            &[("outcome", "skipped_not_selected")],
        )
        .unwrap_or(0.0)
    };
    let before = skipped(&operator.metrics().await?);

    ns.apply_yaml(&bare_pod("other", "other")).await?;
    let pod = running_pods(&ns, "app=other", 1).await?.remove(0);
    let spec = pod.spec.as_ref().context("spec")?;
    ensure!(!has_agent(&pod), "agent injected");
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    ensure!(containers == ["app"], "{containers:?}");
    ensure!(spec.init_containers.is_none(), "{:?}", spec.init_containers);
    ensure!(
        spec.share_process_namespace.is_none(),
        "shareProcessNamespace {:?}",
        spec.share_process_namespace
    );
    let annotations: BTreeMap<String, String> =
        pod.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        !annotations.keys().any(|k| k.starts_with("procwatch.dev/")),
        "{annotations:?}"
    );
    ensure!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name.contains("procwatch")),
        "{:?}",
        spec.volumes
    );
    // The webhook was asked and said no (rather than never being asked).
    let after = skipped(&operator.metrics().await?);
    ensure!(
        after >= before + 1.0,
        "skipped_not_selected {before} -> {after}"
    );
    // And the watch does not count it.
    let pw = pw_yaml(&ns, "sleepers").await?;
    let status = pw.status.as_ref().context("status")?;
    ensure!(
        status.selected_pods == 0 && status.pods.is_empty(),
        "{}",
        describe_status(&pw)
    );
    ns.finish();
    operator.finish();
    Ok(())
}

/// 4. With the operator scaled to zero, creating a pod that a watch selects still succeeds
///    (the webhook fails open) and the pod runs without the agent; once the operator is back,
///    the watch lists it as needing a restart.
#[tokio::test]
async fn pods_are_created_while_the_operator_is_away() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching_sleepers("op-away").await?;

    operator.scale(0).await?;
    let t0 = Instant::now();
    ns.apply_yaml(&bare_pod("during-outage", "sleeper")).await?;
    println!(
        "pod created in {:.2}s with no operator behind the webhook",
        t0.elapsed().as_secs_f64()
    );
    let pod = running_pods(&ns, "app=sleeper", 1).await?.remove(0);
    ensure!(!has_agent(&pod), "agent injected without an operator?");
    ensure!(
        pod.spec
            .as_ref()
            .and_then(|s| s.share_process_namespace)
            .is_none(),
        "shareProcessNamespace set"
    );

    operator.scale(1).await?;
    wait_for_watch(
        &ns,
        "sleepers",
        "the pod listed as needing a restart",
        Duration::from_secs(60),
        |pw| {
            let s = pw.status.as_ref()?;
            (s.selected_pods == 1 && s.attached_pods == 0 && s.needs_restart == ["during-outage"])
                .then_some(())
        },
    )
    .await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// A token of the namespace's `default` service account from the TokenRequest API, bound to
/// `pod`, for `audiences` (empty: the API server's own).
async fn token_for_pod(
    ns: &TestNamespace,
    pod: &Pod,
    audiences: &[&str],
) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = ns.api();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(600),
        },
        ..Default::default()
    };
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let answer = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .context("TokenRequest")?;
    Ok(answer.status.context("TokenRequest without status")?.token)
}

/// The status code and body of one POST to the report endpoint.
async fn post_report(
    client: &reqwest::Client,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let mut request = client
        .post(REPORT_URL)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .context("POST to the report endpoint")?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The process the forged reports claim; must never reach the status.
const FORGED_COMMAND: &str = "forged-by-test";

/// 6. The report endpoint refuses, and changes nothing for: a token (TokenRequest API) of
///    another pod, a token with the API server's audience, a garbage token, no token, an
///    oversized body; the refusals are counted by reason. The same report with the pod's own
///    procwatch token is accepted (the refusals are the token's doing, not the body's).
#[tokio::test]
async fn report_endpoint_refuses_forged_reports() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching_sleepers("op-refuse").await?;
    ns.apply_yaml(&sleeper_deployment("sleeper", "sleeper", 1))
        .await?;
    ns.apply_yaml(&bare_pod("bystander", "other")).await?;
    let target = running_pods(&ns, "app=sleeper", 1).await?.remove(0);
    let bystander = running_pods(&ns, "app=other", 1).await?.remove(0);
    let target_name = pod_name(&target).to_owned();
    wait_for_watch(
        &ns,
        "sleepers",
        "the agent reporting",
        Duration::from_secs(60),
        |pw| (pw.status.as_ref()?.reporting_pods == 1).then_some(()),
    )
    .await?;

    // What an attacker would post: the target's identity, a process that is not there.
    let report = AgentReport {
        pod_name: target_name.clone(),
        pod_namespace: ns.name().to_owned(),
        pod_uid: target.metadata.uid.clone().unwrap_or_default(),
        scanned_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        containers: vec![report::Container {
            name: "app".into(),
            container_id: container_id(&target, "app"),
            process_count: 1,
            processes: vec![report::Process {
                pid: 4242,
                ppid: 1,
                command: FORGED_COMMAND.into(),
                args: format!("{FORGED_COMMAND} --evil"),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let body = serde_json::to_vec(&report)?;
    let other_pods_token = token_for_pod(&ns, &bystander, &[TOKEN_AUDIENCE]).await?;
    let api_audience_token = token_for_pod(&ns, &target, &[]).await?;
    let own_token = token_for_pod(&ns, &target, &[TOKEN_AUDIENCE]).await?;
    // 3 MiB of JSON (the limit is 2 MiB), with a valid token so only the size is wrong.
    let mut oversized = report.clone();
    oversized.containers[0].processes[0].args = "x".repeat(3 * 1024 * 1024);
    let oversized = serde_json::to_vec(&oversized)?;

    let client = operator.https_client().await?;
    let counters = |m: &str| {
        [
            "accepted",
            "unauthenticated",
            "forbidden",
            "too_large",
            "malformed",
        ]
        .map(|r| metric_value(m, "procwatch_reports_total", &[("result", r)]).unwrap_or(0.0))
    };
    let before = counters(&operator.metrics().await?);

    let cases: [(&str, Option<&str>, &Vec<u8>, u16); 5] = [
        (
            "another pod's token (TokenRequest)",
            Some(&other_pods_token),
            &body,
            403,
        ),
        (
            "the API server's audience",
            Some(&api_audience_token),
            &body,
            401,
        ),
        ("a garbage token", Some("not.a.token"), &body, 401),
        ("no token", None, &body, 401),
        ("an oversized body", Some(&own_token), &oversized, 413),
    ];
    for (what, token, body, expected) in cases {
        let (status, answer) = post_report(&client, token, body.clone()).await?;
        println!("{what}: {status} {}", answer.trim());
        ensure!(
            status == expected,
            "{what}: {status} (expected {expected}): {answer}"
        );
    }
    let after = counters(&operator.metrics().await?);
    // unauthenticated +3, forbidden +1, too_large +1; malformed unchanged.
    for (i, (name, delta)) in [
        ("unauthenticated", 3.0),
        ("forbidden", 1.0),
        ("too_large", 1.0),
        ("malformed", 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        ensure!(
            after[i + 1] - before[i + 1] == delta,
            "procwatch_reports_total{{result={name}}}: {} -> {}",
            before[i + 1],
            after[i + 1]
        );
    }

    // Longer than the watch's stale time (10 s): the real agent's reports go on (Reporting
    // stays True, the operator accepts more), the forged process never shows.
    let pws: Api<ProcessWatch> = ns.api();
    let accepted = |m: &str| {
        metric_value(m, "procwatch_reports_total", &[("result", "accepted")]).unwrap_or(0.0)
    };
    let accepted_before = accepted(&operator.metrics().await?);
    let t0 = Instant::now();
    let last = loop {
        let pw = pws.get("sleepers").await?;
        let text = serde_json::to_string(&pw.status)?;
        ensure!(
            !text.contains(FORGED_COMMAND),
            "a forged process in the status: {text}"
        );
        let reporting = pw
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Reporting" && c.status == "True");
        ensure!(
            reporting,
            "the agent's reports stopped: {}",
            describe_status(&pw)
        );
        if t0.elapsed() >= INTERVAL * 6 {
            break pw;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let reports = accepted(&operator.metrics().await?) - accepted_before;
    ensure!(
        reports >= 3.0,
        "{reports} reports accepted in {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    let status = last.status.clone().context("status")?;
    ensure!(
        status.pods.len() == 1 && status.processes == 3,
        "{}",
        describe_status(&last)
    );

    // Control: the pod's own token with audience procwatch is accepted.
    let (status, answer) = post_report(&client, Some(&own_token), body.clone()).await?;
    ensure!(status == 200, "own token: {status} {answer}");
    let response: ReportResponse = serde_json::from_str(&answer)?;
    ensure!(response.watched, "{response:?}");
    ensure!(
        response.containers.iter().any(|c| c.name == "app"),
        "{response:?}"
    );
    let accepted = counters(&operator.metrics().await?)[0];
    ensure!(accepted > after[0], "accepted {accepted}");
    ns.finish();
    operator.finish();
    Ok(())
}

/// 7. The operator pod is deleted while agents report: a new one becomes Ready, leads, and the
///    status catches up — every pod's `reportedAt` advances past the new operator's Ready — within
///    two intervals.
#[tokio::test]
async fn new_operator_takes_over_and_status_catches_up() -> anyhow::Result<()> {
    let (cluster, operator, ns) = operator_watching_sleepers("op-takeover").await?;
    ns.apply_yaml(&sleeper_deployment("sleeper", "sleeper", 2))
        .await?;
    let pods = running_pods(&ns, "app=sleeper", 2).await?;
    let names: Vec<String> = pods.iter().map(|p| pod_name(p).to_owned()).collect();
    wait_for_watch(
        &ns,
        "sleepers",
        "both agents reporting",
        Duration::from_secs(60),
        |pw| (pw.status.as_ref()?.reporting_pods == 2).then_some(()),
    )
    .await?;
    // Reports flow: the operator accepts them (the status does not move for each one).
    let accepted = |m: &str| {
        metric_value(m, "procwatch_reports_total", &[("result", "accepted")]).unwrap_or(0.0)
    };
    let accepted_before = accepted(&operator.metrics().await?);
    wait_for(
        "both agents' reports accepted twice more",
        INTERVAL * 6,
        || async {
            let reports = accepted(&operator.metrics().await?) - accepted_before;
            Ok(if reports >= 4.0 {
                Wait::Done(())
            } else {
                Wait::not_yet(format!("{reports} reports accepted"))
            })
        },
    )
    .await?;
    let pws: Api<ProcessWatch> = ns.api();

    let old = operator.pods().await?;
    let old_name = old
        .first()
        .map(pod_name)
        .context("no operator pod")?
        .to_owned();
    let t_kill = Instant::now();
    cluster
        .kubectl(&[
            "-n",
            procwatch_e2e::OPERATOR_NAMESPACE,
            "delete",
            "pod",
            &old_name,
            "--wait=false",
        ])
        .await?;
    // Both moments polled every 200 ms (not with wait_for's growing delays): measured to
    // within that.
    let poll = Duration::from_millis(200);
    let new_name = loop {
        ensure!(
            t_kill.elapsed() < Duration::from_secs(120),
            "no new operator pod Ready 120s after the delete"
        );
        let pods = operator.pods().await?;
        let ready = pods.iter().find(|p| {
            pod_name(p) != old_name && p.metadata.deletion_timestamp.is_none() && is_running(p)
        });
        if let Some(pod) = ready {
            break pod_name(pod).to_owned();
        }
        tokio::time::sleep(poll).await;
    };
    let t_ready = Instant::now();
    println!(
        "operator pod {old_name} deleted; {new_name} Ready {:.1}s later",
        (t_ready - t_kill).as_secs_f64()
    );
    // The new operator has heard from both agents: its own gauges show both pods (it sets them
    // from the reports it received), and the status counts them. `reportedAt` tells no more: a
    // status that still holds is not rewritten for times alone.
    let caught_up = loop {
        let pw = pws.get("sleepers").await?;
        let complete = pw
            .status
            .as_ref()
            .is_some_and(|s| s.reporting_pods == 2 && s.processes == 6);
        let heard = match operator.metrics().await {
            Ok(metrics) => names.iter().all(|pod| {
                let labels = [
                    ("namespace", ns.name()),
                    ("watch", "sleepers"),
                    ("pod", pod.as_str()),
                    ("container", "app"),
                ];
                metric_value(&metrics, "procwatch_container_processes", &labels) == Some(3.0)
            }),
            // Not serving yet.
            Err(_) => false,
        };
        if heard && complete {
            break pw;
        }
        ensure!(
            t_ready.elapsed() < Duration::from_secs(60),
            "the new operator did not hear from both agents within 60s: {}",
            describe_status(&pw)
        );
        tokio::time::sleep(poll).await;
    };
    let t_caught = Instant::now();
    let catch_up = t_caught - t_ready;
    println!(
        "status caught up {:.1}s after the new operator was Ready ({:.1}s after the delete; interval {}s): {}",
        catch_up.as_secs_f64(),
        (t_caught - t_kill).as_secs_f64(),
        INTERVAL.as_secs(),
        describe_status(&caught_up)
    );
    // What the agents went through while the operator was away.
    for name in &names {
        let logs = ns
            .kubectl(&["logs", name, "-c", AGENT_CONTAINER_NAME])
            .await
            .unwrap_or_default();
        let retries: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("not delivered") || l.contains("refused"))
            .collect();
        println!(
            "agent of {name}: {} reports not delivered meanwhile; the last: {}",
            retries.len(),
            retries.last().map_or("-", |l| l.trim())
        );
    }
    let logs = operator.logs().await;
    ensure!(
        logs.contains("became the leader"),
        "the new operator does not lead:\n{logs}"
    );
    ensure!(
        catch_up <= 2 * INTERVAL,
        "the status caught up only {:.1}s after the new operator was Ready (limit {}s)",
        catch_up.as_secs_f64(),
        (2 * INTERVAL).as_secs()
    );
    ns.finish();
    operator.finish();
    Ok(())
}

/// A pod seen while the evictions went on.
#[derive(Debug, Default)]
struct Seen {
    name: String,
    original: bool,
    first_running_ready: Option<Duration>,
    terminating_or_gone: Option<Duration>,
}

/// 5. `existingPods: Evict` replaces a Deployment's old pods one at a time: polled every
///    250 ms, never more than one old pod is evicted (terminating or gone) before its
///    replacement runs ready; in the end every pod of the Deployment runs the agent. A bare
///    pod the watch also selects is listed in needsRestart and never evicted.
#[tokio::test]
async fn evict_replaces_old_pods_one_at_a_time() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("op-evict").await?;
    const REPLICAS: usize = 3;
    ns.apply_yaml(&sleeper_deployment("web", "evictme", REPLICAS as u32))
        .await?;
    ns.apply_yaml(&bare_pod("lonely", "evictme")).await?;
    let before = running_pods(&ns, "app=evictme", REPLICAS + 1).await?;
    ensure!(
        before.iter().all(|p| !has_agent(p)),
        "agent before any watch"
    );
    let bare_uid = before
        .iter()
        .find(|p| pod_name(p) == "lonely")
        .and_then(|p| p.metadata.uid.clone())
        .context("bare pod")?;
    let mut seen: BTreeMap<String, Seen> = before
        .iter()
        .filter(|p| pod_name(p) != "lonely")
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let entry = Seen {
                name: pod_name(p).to_owned(),
                original: true,
                ..Default::default()
            };
            (uid, entry)
        })
        .collect();
    // The watch must be younger than the pods: creation times have whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let t0 = Instant::now();
    ns.apply_yaml(&watch_yaml("web", "evictme", "Evict"))
        .await?;
    let pods_api = ns.api::<Pod>();
    let pws: Api<ProcessWatch> = ns.api();
    let mut worst_gap = 0i64;
    let final_status = loop {
        ensure!(
            t0.elapsed() < Duration::from_secs(240),
            "evictions not done after 240s: {seen:#?}"
        );
        let now = t0.elapsed();
        let list = pods_api
            .list(&ListParams::default().labels("app=evictme"))
            .await?;
        let present: BTreeMap<String, &Pod> = list
            .items
            .iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        // The bare pod stays, untouched.
        let bare = present
            .get(&bare_uid)
            .context("the bare pod was deleted or evicted")?;
        ensure!(
            bare.metadata.deletion_timestamp.is_none(),
            "the bare pod is terminating"
        );
        for (uid, pod) in &present {
            if *uid == bare_uid {
                continue;
            }
            let entry = seen.entry(uid.clone()).or_insert_with(|| Seen {
                name: pod_name(pod).to_owned(),
                ..Default::default()
            });
            if pod.metadata.deletion_timestamp.is_some() {
                entry.terminating_or_gone.get_or_insert(now);
            } else if is_running(pod) && entry.first_running_ready.is_none() {
                entry.first_running_ready = Some(now);
                ensure!(
                    entry.original || has_agent(pod),
                    "replacement {} without the agent",
                    entry.name
                );
            }
        }
        for (uid, entry) in seen.iter_mut() {
            if !present.contains_key(uid) {
                entry.terminating_or_gone.get_or_insert(now);
            }
        }
        // Old pods evicted so far, and replacements running: at most one old pod missing.
        let evicted = seen
            .values()
            .filter(|s| s.original && s.terminating_or_gone.is_some())
            .count() as i64;
        let replaced = seen
            .values()
            .filter(|s| !s.original && s.first_running_ready.is_some())
            .count() as i64;
        worst_gap = worst_gap.max(evicted - replaced);
        ensure!(
            evicted - replaced <= 1,
            "{evicted} old pods evicted but only {replaced} replacements running at {:.1}s: {seen:#?}",
            now.as_secs_f64()
        );

        let pw = pws.get("web").await?;
        let done = pw.status.as_ref().is_some_and(|s| {
            s.attached_pods == REPLICAS as u32
                && s.selected_pods == REPLICAS as u32 + 1
                && s.needs_restart == ["lonely"]
        });
        if done && evicted == REPLICAS as i64 && replaced == REPLICAS as i64 {
            break pw;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut order: Vec<&Seen> = seen
        .values()
        .filter(|s| s.original && s.terminating_or_gone.is_some())
        .collect();
    order.sort_by_key(|s| s.terminating_or_gone);
    let mut replacements: Vec<&Seen> = seen.values().filter(|s| !s.original).collect();
    replacements.sort_by_key(|s| s.first_running_ready);
    println!("evictions (seconds after the watch was applied):");
    for (i, old) in order.iter().enumerate() {
        let new = replacements.get(i);
        println!(
            "  {:>5.1}s evicted {}; {:>5.1}s replacement {} running with the agent",
            old.terminating_or_gone.unwrap_or_default().as_secs_f64(),
            old.name,
            new.and_then(|n| n.first_running_ready)
                .unwrap_or_default()
                .as_secs_f64(),
            new.map_or("?", |n| n.name.as_str())
        );
    }
    // Each eviction came after the previous replacement ran.
    for i in 1..order.len() {
        let previous_ready = replacements[i - 1].first_running_ready;
        ensure!(
            order[i].terminating_or_gone >= previous_ready,
            "eviction {} before replacement {} ran: {seen:#?}",
            i + 1,
            i
        );
    }
    ensure!(worst_gap <= 1, "{worst_gap}");
    println!("status: {}", describe_status(&final_status));

    // All pods of the Deployment now run the agent, and report.
    let after = running_pods(&ns, "app=evictme", REPLICAS + 1).await?;
    for pod in &after {
        ensure!(
            has_agent(pod) == (pod_name(pod) != "lonely"),
            "{}: agent {}",
            pod_name(pod),
            has_agent(pod)
        );
    }
    wait_for_watch(
        &ns,
        "web",
        "the replacements reporting",
        Duration::from_secs(60),
        |pw| (pw.status.as_ref()?.reporting_pods == REPLICAS as u32).then_some(()),
    )
    .await?;
    let metrics = operator.metrics().await?;
    let evictions = metric_value(
        &metrics,
        "procwatch_evictions_total",
        &[("result", "evicted")],
    )
    .unwrap_or(0.0);
    ensure!(
        evictions == REPLICAS as f64,
        "procwatch_evictions_total{{evicted}} = {evictions}"
    );
    let events = ns
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ProcessWatch",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ])
        .await?;
    println!("events of the watch:\n{events}");
    ensure!(
        events.matches("PodEvicted").count() == REPLICAS,
        "PodEvicted events: {events}"
    );
    ensure!(!events.contains("evicted pod lonely"), "{events}");
    ns.finish();
    operator.finish();
    Ok(())
}

/// 8. A Job's pod with the agent (a plain container on servers before 1.29): it reports while the
///    job runs, and once the job's own container has exited the agent exits 0 too, so the pod
///    succeeds and the Job completes.
#[tokio::test]
async fn selected_job_runs_to_completion() -> anyhow::Result<()> {
    const WORK_SECONDS: u32 = 20;
    let (_cluster, operator, ns) = operator_watching("op-job", "batch", "batch").await?;

    let t_apply = Instant::now();
    ns.apply_yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: work}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: batch}}}}
    spec:
      hostNetwork: true
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: localhost/busybox:local
        imagePullPolicy: Never
        command: [sleep, "{WORK_SECONDS}"]
"#
    ))
    .await?;

    // While it runs: its `sleep` is in the status, under container `work`.
    wait_for_watch(
        &ns,
        "batch",
        "the job's sleep in the status of ProcessWatch batch",
        Duration::from_secs(u64::from(WORK_SECONDS)),
        |pw| {
            let pod = pw.status.as_ref()?.pods.first()?;
            let work = pod.containers.iter().find(|c| c.name == "work")?;
            work.processes
                .iter()
                .any(|p| p.command == "sleep")
                .then_some(())
        },
    )
    .await?;
    println!(
        "job reporting {:.1}s after apply",
        t_apply.elapsed().as_secs_f64()
    );

    let jobs: Api<Job> = ns.api();
    wait_for(
        "Job work to complete",
        Duration::from_secs(u64::from(WORK_SECONDS) + 120),
        || async {
            let job = jobs.get("work").await?;
            let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(match conditions.iter().find(|c| c.status == "True") {
                Some(c) if c.type_ == "Complete" => Wait::Done(()),
                Some(c) => Wait::Fail(anyhow::anyhow!("Job work is {}: {:?}", c.type_, c.message)),
                None => Wait::not_yet(format!("conditions {conditions:?}")),
            })
        },
    )
    .await?;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app=batch"))
        .await?
        .items;
    ensure!(pods.len() == 1, "{} pods of the job", pods.len());
    let pod = &pods[0];
    let status = pod.status.as_ref().context("pod status")?;
    ensure!(
        status.phase.as_deref() == Some("Succeeded"),
        "pod phase {:?}",
        status.phase
    );
    // Every container exited 0, the agent included, whether plain container or native sidecar.
    let statuses = status
        .container_statuses
        .iter()
        .chain(&status.init_container_statuses)
        .flatten();
    let mut exits = BTreeMap::new();
    for container in statuses {
        let terminated = container
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .with_context(|| format!("container {} not terminated", container.name))?;
        exits.insert(container.name.clone(), terminated.exit_code);
    }
    ensure!(
        exits == BTreeMap::from([("work".to_owned(), 0), (AGENT_CONTAINER_NAME.to_owned(), 0)]),
        "exit codes {exits:?}"
    );
    println!(
        "job complete {:.1}s after apply ({WORK_SECONDS}s of work)",
        t_apply.elapsed().as_secs_f64()
    );
    ns.finish();
    operator.finish();
    Ok(())
}
