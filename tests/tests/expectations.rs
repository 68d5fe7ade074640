//! Telling when what runs is not what should, end to end: `spec.expect` of the nginx sample
//! (Compliant, status.violations, ExpectationViolated and ProcessStarted Events, the metric),
//! configuration drift across two replicas (InSync, ConfigDrift) and the pids a pod allocates
//! between two scans (pidsAllocated).
//!
//! Needs the images `localhost/procwatch:dev`, `localhost/nginx:debian` and
//! `localhost/busybox:local` (tests/run makes them). The nginx sample runs one replica on the
//! host network (two would share its port), so the drift test runs two busybox replicas.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use procwatch_crds::{ProcessWatch, ProcessWatchStatus};
use procwatch_e2e::processwatch::{
    apply_watch, busybox_deployment, describe_status, metric_value, wait_for_watch,
};
use procwatch_e2e::samples::Sample;
use procwatch_e2e::{Cluster, Operator, TestNamespace, Wait, wait_for};

/// Two intervals of the watches here (5s in the samples' overlay), and time to write.
const NOTICED_WITHIN: Duration = Duration::from_secs(30);

fn condition<'a>(status: &'a ProcessWatchStatus, kind: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn condition_message(pw: &ProcessWatch, kind: &str) -> String {
    pw.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == kind)
        .map(|c| format!("{} {}: {}", c.status, c.reason, c.message))
        .unwrap_or_default()
}

/// Events of the namespace with `reason`, as `note (related pod)`.
async fn events(ns: &TestNamespace, reason: &str) -> anyhow::Result<Vec<(String, String)>> {
    let events = ns.api::<Event>().list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            let related = e
                .related
                .and_then(|r| r.name)
                .unwrap_or_else(|| "-".to_string());
            (e.message.unwrap_or_default(), related)
        })
        .collect())
}

async fn wait_for_event(
    ns: &TestNamespace,
    reason: &str,
    matches: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<(String, String)> {
    wait_for(&format!("a {reason} event"), NOTICED_WITHIN, || async {
        let found = events(ns, reason).await?;
        Ok(match found.iter().find(|(note, pod)| matches(note, pod)) {
            Some(event) => Wait::Done(event.clone()),
            None => Wait::not_yet(format!("{found:?}")),
        })
    })
    .await
}

async fn print_kubectl(ns: &TestNamespace, args: &[&str]) -> anyhow::Result<String> {
    let out = ns.kubectl(args).await?;
    println!("$ kubectl {}\n{out}", args.join(" "));
    Ok(out)
}

async fn metric(operator: &Operator, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let text = operator.metrics().await?;
    Ok(metric_value(&text, name, labels).unwrap_or(0.0))
}

#[tokio::test]
async fn nginx_meets_its_expectations_until_a_shell_command_runs() -> anyhow::Result<()> {
    let (operator, ns, _t0, _first) = Sample {
        label: "nginx",
        namespace: "expect-nginx",
        watch: "web",
        image: "localhost/nginx:debian",
        make: "tests/images/nginx",
        created: &[
            "processwatch.procwatch.dev/web created",
            "deployment.apps/web created",
        ],
    }
    .start()
    .await?;
    let healthy = |pw: &ProcessWatch| {
        let status = pw.status.as_ref()?;
        (condition(status, "Compliant") == Some("True")
            && condition(status, "InSync") == Some("True"))
        .then_some(())
    };
    wait_for_watch(&ns, "web", "Compliant and InSync", NOTICED_WITHIN, healthy).await?;
    print_kubectl(&ns, &["get", "processwatches", "web"]).await?;
    let pod = ns
        .live_pods("app=nginx")
        .await?
        .first()
        .and_then(|p| p.metadata.name.clone());
    let pod = pod.context("no nginx pod")?;

    // kubectl exec sleep 30 in the nginx container, in the background.
    let mut exec = ns
        .cluster()
        .kubectl_command()
        .args([
            "-n",
            ns.name(),
            "exec",
            &pod,
            "-c",
            "nginx",
            "--",
            "sleep",
            "30",
        ])
        .kill_on_drop(true)
        .spawn()
        .context("kubectl exec")?;
    let violated = wait_for_watch(
        &ns,
        "web",
        "Compliant=False naming sleep",
        NOTICED_WITHIN,
        |pw| {
            let status = pw.status.as_ref()?;
            let sleep = status
                .violations
                .iter()
                .find(|v| v.rule == "commands" && v.command.as_deref() == Some("sleep"))?;
            (condition(status, "Compliant") == Some("False")).then(|| sleep.clone())
        },
    )
    .await?;
    ensure!(
        violated.pod == pod && violated.container == "nginx",
        "{violated:?}"
    );
    let pw: ProcessWatch = ns.api().get("web").await?;
    let compliant = condition_message(&pw, "Compliant");
    ensure!(compliant.contains("sleep"), "{compliant}");
    println!("Compliant: {compliant}");
    println!(
        "status.violations:\n{}",
        serde_yaml::to_string(&pw.status.as_ref().map(|s| &s.violations))?
    );
    print_kubectl(&ns, &["get", "processwatches", "web"]).await?;

    let (note, related) =
        wait_for_event(&ns, "ExpectationViolated", |note, _| note.contains("sleep")).await?;
    ensure!(
        related == pod,
        "ExpectationViolated names {related}, not the pod {pod}"
    );
    println!("ExpectationViolated ({related}): {note}");
    let (note, related) = wait_for_event(&ns, "ProcessStarted", |note, _| {
        note.starts_with("sleep (pid ")
    })
    .await?;
    ensure!(related == pod, "ProcessStarted names {related}, not {pod}");
    ensure!(note.contains("started in container nginx of pod"), "{note}");
    println!("ProcessStarted ({related}): {note}");
    let labels = [
        ("namespace", ns.name()),
        ("watch", "web"),
        ("container", "nginx"),
        ("rule", "commands"),
    ];
    let violations = metric(&operator, "procwatch_violations", &labels).await?;
    ensure!(violations >= 1.0, "procwatch_violations {violations}");
    println!("procwatch_violations{{rule=\"commands\"}} {violations}");

    // sleep exits after 30s: the violation clears.
    exec.wait().await.context("kubectl exec sleep 30")?;
    wait_for_watch(&ns, "web", "Compliant again", NOTICED_WITHIN, |pw| {
        let status = pw.status.as_ref()?;
        (condition(status, "Compliant") == Some("True") && status.violations.is_empty())
            .then_some(())
    })
    .await?;
    let (note, _) = wait_for_event(&ns, "ExpectationMet", |_, _| true).await?;
    println!("ExpectationMet: {note}");
    let cleared = metric(&operator, "procwatch_violations", &labels).await?;
    ensure!(cleared == 0.0, "procwatch_violations still {cleared}");
    print_kubectl(&ns, &["describe", "processwatches", "web"]).await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// Two replicas that write the same /etc/app.conf, then sleep.
fn replicas_yaml() -> String {
    let watch = r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {name: conf}
spec:
  selector: {matchLabels: {app: conf}}
  interval: 2s
  collect:
    files: [/etc/app.conf]
  agent: {ptrace: true}
---"#;
    let replicas = busybox_deployment(
        "conf",
        "conf",
        2,
        "echo workers=2 > /etc/app.conf; exec sleep 3600",
    );
    format!("{watch}{replicas}")
}

#[tokio::test]
async fn a_replica_with_another_config_is_named() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("expect-drift").await?;
    let yaml = replicas_yaml();
    let (watch, deployment) = yaml.split_once("---").context("two objects")?;
    apply_watch(&ns, watch, "conf").await?;
    ns.apply_yaml(deployment).await?;
    wait_for_watch(
        &ns,
        "conf",
        "two pods in sync",
        Duration::from_secs(180),
        |pw| {
            let status = pw.status.as_ref()?;
            (status.reporting_pods == 2 && condition(status, "InSync") == Some("True"))
                .then_some(())
        },
    )
    .await?;
    print_kubectl(&ns, &["get", "processwatches", "conf"]).await?;
    let pods: Vec<String> = ns
        .live_pods("app=conf")
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let changed = pods.last().context("no pod")?.clone();
    ns.exec(
        &changed,
        "app",
        &["sh", "-c", "echo workers=8 > /etc/app.conf"],
    )
    .await?;

    let pw = wait_for_watch(
        &ns,
        "conf",
        "InSync=False naming the pod",
        NOTICED_WITHIN,
        |pw| {
            let message = condition_message(pw, "InSync");
            (message.starts_with("False") && message.contains(&changed)).then(|| pw.clone())
        },
    )
    .await?;
    println!("InSync: {}", condition_message(&pw, "InSync"));
    let variants = &pw.status.as_ref().context("status")?.summary[0].file_variants;
    println!(
        "status.summary[0].fileVariants:\n{}",
        serde_yaml::to_string(variants)?
    );
    ensure!(variants[0].variants == 2, "{variants:?}");
    ensure!(
        variants[0].fingerprints[1].pod_names == [changed.clone()],
        "{variants:?}"
    );
    let (note, related) = wait_for_event(&ns, "ConfigDrift", |_, pod| pod == changed).await?;
    println!("ConfigDrift ({related}): {note}");
    let labels = [
        ("namespace", ns.name()),
        ("watch", "conf"),
        ("container", "app"),
        ("path", "/etc/app.conf"),
    ];
    let count = metric(&operator, "procwatch_file_variants", &labels).await?;
    ensure!(count == 2.0, "procwatch_file_variants {count}");
    println!("procwatch_file_variants{{path=\"/etc/app.conf\"}} {count}");
    print_kubectl(&ns, &["get", "processwatches", "conf"]).await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// After 20s (the agent's first report is the baseline), 4000 runs of /bin/true, each a new
/// pid that lives far shorter than the 2s interval; then it sleeps.
const STORM: &str = "sleep 20; i=0; while [ $i -lt 4000 ]; do /bin/true; i=$((i+1)); done; \
                     exec sleep 3600";

#[tokio::test]
async fn short_lived_processes_are_counted_though_hardly_seen() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("expect-churn").await?;
    let watch = r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {name: storm}
spec:
  selector: {matchLabels: {app: storm}}
  interval: 2s
"#;
    apply_watch(&ns, watch, "storm").await?;
    ns.apply_yaml(&procwatch_e2e::processwatch::busybox_pod(
        "storm", "storm", STORM,
    ))
    .await?;
    // Every command any status listed while the storm ran.
    let commands = RefCell::new(BTreeSet::new());
    let allocated = wait_for(
        "pidsAllocated of pod storm in the thousands",
        Duration::from_secs(240),
        || {
            let api = ns.api::<ProcessWatch>();
            let commands = &commands;
            async move {
                let pw = api.get("storm").await?;
                let status = pw.status.clone().unwrap_or_default();
                for container in status.pods.iter().flat_map(|p| &p.containers) {
                    let listed = container
                        .processes
                        .iter()
                        .map(|p| (p.command.clone(), p.pid));
                    commands.borrow_mut().extend(listed);
                }
                let allocated = status.pods.first().and_then(|p| p.pids_allocated);
                Ok(match allocated {
                    Some(n) if n >= 3000 => Wait::Done((n, status.pods[0].pids_per_minute)),
                    _ => Wait::not_yet(describe_status(&pw)),
                })
            }
        },
    )
    .await?;
    println!(
        "pidsAllocated {}, per minute {:?}",
        allocated.0, allocated.1
    );
    let listed = commands.into_inner();
    let names: BTreeSet<&str> = listed.iter().map(|(command, _)| command.as_str()).collect();
    let trues = listed
        .iter()
        .filter(|(command, _)| command == "true")
        .count();
    println!("commands ever listed: {names:?}; true processes among them: {trues}");
    // A scan may catch one `true` alive now and then; nearly all are only counted.
    ensure!(
        (trues as u64) * 100 < allocated.0,
        "{trues} true processes listed of {} pids allocated",
        allocated.0
    );
    let labels = [
        ("namespace", ns.name()),
        ("watch", "storm"),
        ("pod", "storm"),
    ];
    let total = metric(&operator, "procwatch_pids_allocated_total", &labels).await?;
    ensure!(total >= 3000.0, "procwatch_pids_allocated_total {total}");
    println!("procwatch_pids_allocated_total{{pod=\"storm\"}} {total}");
    let pod = print_kubectl(
        &ns,
        &[
            "get",
            "processwatches",
            "storm",
            "-o",
            "jsonpath={.status.pods[0].name} pidsAllocated={.status.pods[0].pidsAllocated} pidsPerMinute={.status.pods[0].pidsPerMinute}",
        ],
    )
    .await?;
    ensure!(pod.starts_with("storm "), "{pod}");
    ns.finish();
    operator.finish();
    Ok(())
}
