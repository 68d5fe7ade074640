//! End to end on a real cluster: the agent holds against the workload it watches. It carries
//! no API token of the pod, the webhook runs once per pod, and a hostile container (FIFOs where
//! files should be, a terabyte of sparse file, a megabyte of command line and environment,
//! thousands of threads and listeners, a process of the agent's own user after its token)
//! neither stops its reports nor robs it.

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::Api;
use procwatch_crds::constants::{AGENT_CONTAINER_NAME, TOKEN_FILE};
use procwatch_crds::{ContainerReport, PodReport, ProcessWatch};
use procwatch_e2e::processwatch::{
    agent_token_volume, apply_watch, busybox_pod, metric_value, wait_for_watch, watch_yaml,
};
use procwatch_e2e::{Cluster, Operator, TestNamespace, Wait, wait_for};

/// Where the API server's ServiceAccount admission mounts the pod's API token.
const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The agent's memory limit when no watch sets resources (the webhook's default).
const AGENT_MEMORY_LIMIT_BYTES: u64 = 32 * 1024 * 1024;

fn condition_status(pw: &ProcessWatch, type_: &str) -> Option<String> {
    pw.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn container<'a>(spec_containers: &'a [Container], name: &str) -> anyhow::Result<&'a Container> {
    spec_containers
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no container {name}"))
}

fn restart_count(pod: &Pod, name: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .map(|c| c.restart_count)
}

/// Every sample of `procwatch_admissions_total`, by outcome.
fn admissions(metrics: &str) -> Vec<(&'static str, f64)> {
    [
        "injected",
        "already_injected",
        "skipped_not_selected",
        "skipped_opt_out",
        "skipped_unsupported",
        "ignored",
        "error",
    ]
    .into_iter()
    .map(|outcome| {
        let value = metric_value(
            metrics,
            "procwatch_admissions_total",
            &[("outcome", outcome)],
        );
        (outcome, value.unwrap_or(0.0))
    })
    .collect()
}

/// The pod's API token (the ServiceAccount admission's `default-token-…` volume) is mounted into
/// the app but never into the agent, whose own audience-bound token takes its path, readable by
/// the agent (default and ptrace) and closed to others; the webhook is called once per pod.
#[tokio::test]
async fn the_agent_holds_no_pod_token_and_the_webhook_runs_once_per_pod() -> anyhow::Result<()> {
    const PLAIN: usize = 3;
    const TRACED: usize = 2;
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("agent-token").await?;
    apply_watch(&ns, &watch_yaml("plain", "plain", "2s", ""), "plain").await?;
    apply_watch(
        &ns,
        &watch_yaml("traced", "traced", "2s", "  agent: {ptrace: true}"),
        "traced",
    )
    .await?;

    let before = admissions(&operator.metrics().await?);
    let mut names = Vec::new();
    for (app, count) in [("plain", PLAIN), ("traced", TRACED)] {
        for index in 0..count {
            let name = format!("{app}-{index}");
            ns.apply_yaml(&busybox_pod(&name, app, "exec sleep 3600"))
                .await?;
            names.push(name);
        }
    }
    let after = admissions(&operator.metrics().await?);
    let calls: Vec<(&str, f64)> = after
        .iter()
        .zip(&before)
        .map(|((outcome, a), (_, b))| (*outcome, a - b))
        .filter(|(_, delta)| *delta != 0.0)
        .collect();
    let total: f64 = calls.iter().map(|(_, delta)| delta).sum();
    println!(
        "webhook calls for {} pod creations: {total} ({calls:?})",
        names.len()
    );
    ensure!(
        calls == [("injected", names.len() as f64)],
        "one call per pod, each injecting: {calls:?}"
    );

    // Both agents read their token (mode 0440 as the kubelet writes it, root:root): the uid
    // 65534 agent through its group, the ptrace agent as its owner. Reports prove it.
    for (watch, count) in [("plain", PLAIN), ("traced", TRACED)] {
        wait_for_watch(
            &ns,
            watch,
            &format!("{count} pods of {watch} reporting"),
            Duration::from_secs(120),
            |pw| (pw.status.as_ref()?.reporting_pods == count as u32).then_some(()),
        )
        .await?;
    }

    let pods: Api<Pod> = ns.api();
    for name in &names {
        let pod = pods.get(name).await?;
        let spec = pod.spec.as_ref().context("pod spec")?;
        let app = container(&spec.containers, "app")?;
        let agent = container(&spec.containers, AGENT_CONTAINER_NAME)?;
        let pod_token = app
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT_PATH)
            .context("the app has no API token mount: the ServiceAccount admission did not run")?;
        ensure!(
            pod_token.name.starts_with("default-token-"),
            "{name}: app mounts {pod_token:?}"
        );
        let agent_mounts: Vec<(&str, &str)> = agent
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        println!("{name}: agent mounts {agent_mounts:?}");
        ensure!(
            agent_mounts
                .iter()
                .all(|(volume, _)| *volume != pod_token.name
                    && !volume.starts_with("default-token-")),
            "{name}: the agent mounts the pod's API token: {agent_mounts:?}"
        );
        let token_volume = agent_token_volume(spec)
            .context("no projected token volume with audience procwatch")?;
        ensure!(
            agent_mounts.contains(&(token_volume.name.as_str(), SERVICE_ACCOUNT_MOUNT_PATH)),
            "{name}: the agent's own token does not take the API token's path: {agent_mounts:?}"
        );
        let mode = token_volume.projected.as_ref().and_then(|p| p.default_mode);
        ensure!(mode == Some(0o440), "{name}: token mode {mode:?}");
        ensure!(
            restart_count(&pod, AGENT_CONTAINER_NAME) == Some(0),
            "{name}: the agent restarted"
        );
    }
    ns.finish();
    operator.finish();
    Ok(())
}

/// The hostile container's script. Its `/etc` is an empty volume, so it can replace
/// `/etc/passwd` (with a FIFO, which also hangs `kubectl exec` into it: runc reads the file to
/// resolve the user; so the test acts through the intruder container instead).
const HOSTILE_SCRIPT: &str = r#"
set -e
echo 'nobody:x:65534:0:nobody:/:/bin/sh' > /etc/passwd
rm /etc/passwd
mkfifo /etc/passwd
procwatch-testprog threads --count 5000 &
procwatch-testprog broker --sockets 2000 &
(ulimit -s 16384 && exec procwatch-testprog bulky --bytes 1048576) &
exec sleep 3600
"#;

/// What the watch watches; the intruder makes it a FIFO, then a sparse terabyte, in the `/tmp`
/// it shares with the hostile container.
const WATCHED: &str = "/tmp/watched";
const TERABYTE: u64 = 1 << 40;

/// A pod of three containers: a normal one; the hostile one; and the intruder, whose shell
/// the test drives. The hostile and intruder containers run as 65534:0, the default agent's own
/// uid and gid: the kernel's ptrace check lets them at the agent but for the agent being
/// non-dumpable, and lets the agent into their files.
fn hostile_pod() -> String {
    let script = serde_json::to_string(HOSTILE_SCRIPT).expect("a string serialises");
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hostile, labels: {{app: hostile}}}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: normal
    image: localhost/busybox:local
    imagePullPolicy: Never
    command: [sh, -c, "exec sleep 3600"]
  - name: hostile
    image: localhost/procwatch-testprog:dev
    imagePullPolicy: Never
    command: [sh, -c, {script}]
    securityContext: {{runAsUser: 65534, runAsGroup: 0}}
    volumeMounts: [{{name: etc, mountPath: /etc}}, {{name: tmp, mountPath: /tmp}}]
  - name: intruder
    image: localhost/busybox:local
    imagePullPolicy: Never
    command: [sh, -c, "exec sleep 3600"]
    securityContext: {{runAsUser: 65534, runAsGroup: 0}}
    volumeMounts: [{{name: tmp, mountPath: /tmp}}]
  volumes:
  - {{name: etc, emptyDir: {{}}}}
  - {{name: tmp, emptyDir: {{}}}}
"#
    )
}

fn hostile_report(pw: &ProcessWatch) -> Option<(&PodReport, &ContainerReport)> {
    let pod = pw
        .status
        .as_ref()?
        .pods
        .iter()
        .find(|p| p.name == "hostile")?;
    let container = pod.containers.iter().find(|c| c.name == "hostile")?;
    Some((pod, container))
}

fn has_note(container: &ContainerReport, parts: &[&str]) -> bool {
    container
        .unreadable
        .iter()
        .any(|line| parts.iter().all(|part| line.contains(part)))
}

/// Notes that tell of a report that missed its deadline or repeated an earlier scan.
fn late_notes(container: &ContainerReport) -> Vec<&String> {
    container
        .unreadable
        .iter()
        .filter(|line| line.contains("deadline") || line.contains("facts of an earlier scan"))
        .collect()
}

/// Runs `script` in the intruder container; its output (stderr joined to stdout).
async fn as_intruder(ns: &TestNamespace, script: &str) -> anyhow::Result<String> {
    let full = format!("{{ {script} ; }} 2>&1");
    // A hung exec (runc blocked in the container) must not hold the shared cluster.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        ns.exec("hostile", "intruder", &["sh", "-c", &full]),
    )
    .await
    .with_context(|| format!("kubectl exec of {script:?} still running after 60 s"))??;
    println!("intruder $ {script}\n{}", out.trim_end());
    Ok(out)
}

#[tokio::test]
async fn a_hostile_workload_neither_stops_nor_robs_the_agent() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("hostile").await?;
    let files = format!("  collect: {{files: [{WATCHED}]}}");
    apply_watch(
        &ns,
        &watch_yaml("hostile", "hostile", "5s", &files),
        "hostile",
    )
    .await?;
    ns.apply_yaml(&hostile_pod()).await?;

    // Everything the container does is seen, and what the agent refused is named.
    let pw = wait_for_watch(
        &ns,
        "hostile",
        "the hostile container reported with its refused facts named",
        Duration::from_secs(180),
        |pw| {
            let (_, c) = hostile_report(pw)?;
            let threads = c
                .processes
                .iter()
                .any(|p| p.command == "threads" && p.threads == 5000);
            let hold = c.processes.iter().any(|p| p.command == "hold");
            let broker = c.processes.iter().any(|p| p.command == "flux-broker");
            let notes = has_note(c, &["/etc/passwd", "not a regular file (fifo)"])
                && has_note(c, &["cmdline of pid", "read limit of 4 KiB"])
                && has_note(c, &["environ of pid", "read limit of 64 KiB"])
                && has_note(c, &["listening sockets: 1744 more not listed"])
                && has_note(c, &[&format!("file {WATCHED}: not found")]);
            (threads && hold && broker && notes).then(|| pw.clone())
        },
    )
    .await?;
    let (_, hostile) = hostile_report(&pw).context("hostile container")?;
    println!("hostile container's notes: {:#?}", hostile.unreadable);
    let hold = hostile
        .processes
        .iter()
        .find(|p| p.command == "hold")
        .context("hold")?;
    ensure!(
        hold.args.ends_with('…') && hold.args.len() <= 4096 + '…'.len_utf8(),
        "a megabyte of arguments is cut to 4 KiB: {} bytes",
        hold.args.len()
    );
    ensure!(hostile.truncated, "the container is marked truncated");
    ensure!(
        hostile.listening.len() == 256,
        "{}",
        hostile.listening.len()
    );

    // The watched path becomes a FIFO, then a sparse terabyte.
    as_intruder(&ns, &format!("mkfifo {WATCHED}")).await?;
    wait_for_watch(
        &ns,
        "hostile",
        "the FIFO at the watched path named",
        Duration::from_secs(60),
        |pw| {
            has_note(
                hostile_report(pw)?.1,
                &[&format!("file {WATCHED}: not a regular file (fifo)")],
            )
            .then_some(())
        },
    )
    .await?;
    as_intruder(
        &ns,
        &format!("rm {WATCHED} && truncate -s {TERABYTE} {WATCHED}"),
    )
    .await?;
    let print = wait_for_watch(
        &ns,
        "hostile",
        "the terabyte reported by size and mode only",
        Duration::from_secs(60),
        |pw| {
            let (_, c) = hostile_report(pw)?;
            let print = c
                .files
                .iter()
                .find(|f| f.path == WATCHED && f.size == TERABYTE)?;
            has_note(
                c,
                &[&format!(
                    "file {WATCHED}: larger than 64 MiB: size and mode only"
                )],
            )
            .then(|| print.clone())
        },
    )
    .await?;
    ensure!(print.sha256.is_empty(), "a terabyte hashed: {print:?}");

    // Three intervals more: Reporting=True throughout, each report a new scan in time.
    let accepted = |metrics: &str| {
        metric_value(
            metrics,
            "procwatch_reports_total",
            &[("result", "accepted")],
        )
        .unwrap_or(0.0)
    };
    let accepted_before = accepted(&operator.metrics().await?);
    let started = std::time::Instant::now();
    let api: Api<ProcessWatch> = ns.api();
    // The status does not move for each report (`reportedAt` is refreshed every few minutes);
    // the operator counts each one it accepts.
    let reports = wait_for(
        "three more reports of the hostile pod",
        Duration::from_secs(60),
        || async {
            let pw = api.get("hostile").await?;
            let reporting = condition_status(&pw, "Reporting");
            if reporting.as_deref() != Some("True") {
                return Ok(Wait::Fail(anyhow::anyhow!("Reporting={reporting:?}")));
            }
            let (_, c) = hostile_report(&pw).context("hostile pod")?;
            let late = late_notes(c);
            if !late.is_empty() {
                return Ok(Wait::Fail(anyhow::anyhow!("a late report: {late:?}")));
            }
            let reports = accepted(&operator.metrics().await?) - accepted_before;
            Ok(if reports > 3.0 {
                Wait::Done(reports)
            } else {
                Wait::not_yet(format!("{reports} reports accepted"))
            })
        },
    )
    .await?;
    println!(
        "reports accepted in {:.1}s: {reports}, Reporting=True and no late scan throughout",
        started.elapsed().as_secs_f64()
    );

    // A process of the agent's own uid and gid cannot read its token or its environment; the
    // same reads of another process of that user succeed, so only the agent's non-dumpable
    // state stops them.
    let id = as_intruder(&ns, "id").await?;
    ensure!(id.starts_with("uid=65534(nobody) gid=0"), "{id}");
    let control = as_intruder(&ns, "wc -c < /proc/$(pidof hold)/environ").await?;
    let environ_bytes: u64 = control.trim().parse().context("environ size of hold")?;
    ensure!(environ_bytes > 1 << 20, "{environ_bytes}");
    for target in [
        format!("root{TOKEN_FILE}"),
        format!("root{SERVICE_ACCOUNT_MOUNT_PATH}/token"),
        "environ".to_string(),
    ] {
        let out = as_intruder(
            &ns,
            &format!("cat /proc/$(pidof procwatch-agent)/{target} > /dev/null; echo exit=$?"),
        )
        .await?;
        ensure!(
            out.contains("Permission denied") && out.trim_end().ends_with("exit=1"),
            "the workload read the agent's {target}: {out}"
        );
    }

    // The agent never restarted, and its peak memory stayed under its limit.
    let status = as_intruder(
        &ns,
        "grep -E '^Vm(HWM|RSS)' /proc/$(pidof procwatch-agent)/status",
    )
    .await?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .context("VmHWM")?
        .trim()
        .parse()?;
    println!(
        "agent peak RSS (VmHWM): {peak_kib} KiB of its {} KiB limit",
        AGENT_MEMORY_LIMIT_BYTES / 1024
    );
    ensure!(peak_kib * 1024 < AGENT_MEMORY_LIMIT_BYTES, "{peak_kib} KiB");
    let pod = ns.api::<Pod>().get("hostile").await?;
    ensure!(
        restart_count(&pod, AGENT_CONTAINER_NAME) == Some(0),
        "the agent restarted: {:?}",
        pod.status.as_ref().map(|s| &s.container_statuses)
    );
    ns.finish();
    operator.finish();
    Ok(())
}
