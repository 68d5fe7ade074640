//! Reading ProcessWatches the way a user does (`kubectl get pw`, `kubectl get pw -o yaml`) and
//! the operator's Prometheus metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, PodSpec, Volume};
use kube::api::Api;
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{AGENT_CONTAINER_NAME, TOKEN_AUDIENCE};

use crate::cluster::TestNamespace;
use crate::wait::{Wait, wait_for};

/// The columns `kubectl get pw` prints, in order: NAME, the CRD's printer columns, AGE.
pub const PW_COLUMNS: [&str; 9] = [
    "NAME",
    "SELECTED",
    "ATTACHED",
    "REPORTING",
    "PROCESSES",
    "READY",
    "COMPLIANT",
    "INSYNC",
    "AGE",
];

/// The cells of a [`pw_table`] row under every column of [`PW_COLUMNS`] but AGE (which changes
/// with time), in that order; `<missing>` for a column the row lacks.
pub fn pw_cells(row: &BTreeMap<String, String>) -> Vec<&str> {
    PW_COLUMNS
        .iter()
        .filter(|c| **c != "AGE")
        .map(|c| row.get(*c).map_or("<missing>", String::as_str))
        .collect()
}

/// `kubectl get pw` of the namespace, one map per row: column header (as printed, e.g.
/// `SELECTED`) to cell.
pub async fn pw_table(ns: &TestNamespace) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let out = ns.kubectl(&["get", "processwatches"]).await?;
    parse_table(&out)
}

/// Parses kubectl's default table output. Its columns are aligned, so each cell is the text
/// under its header; a cell may be empty (a printer column whose JSONPath finds nothing, such
/// as a condition a watch does not have, prints as nothing in kubectl 1.20).
pub fn parse_table(out: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        bail!("no table in {out:?}");
    };
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let columns: Vec<&str> = header.split_whitespace().collect();
    lines
        .map(|line| {
            let cell = |i: usize| -> anyhow::Result<String> {
                let start = starts[i].min(line.len());
                let end = starts.get(i + 1).map_or(line.len(), |&e| e.min(line.len()));
                let text = line
                    .get(start..end)
                    .with_context(|| format!("row {line:?} does not fit header {header:?}"))?;
                Ok(text.trim().to_string())
            };
            columns
                .iter()
                .enumerate()
                .map(|(i, column)| Ok((column.to_string(), cell(i)?)))
                .collect()
        })
        .collect()
}

/// `kubectl get pw NAME -o yaml`, parsed.
pub async fn pw_yaml(ns: &TestNamespace, name: &str) -> anyhow::Result<ProcessWatch> {
    let out = ns
        .kubectl(&["get", "processwatch", name, "-o", "yaml"])
        .await?;
    serde_yaml::from_str(&out).with_context(|| format!("parsing kubectl get pw {name} -o yaml"))
}

/// A watch named `name` selecting `app=<app>` every `interval`; `spec_extra` (YAML lines indented
/// by two spaces) is appended to its spec.
pub fn watch_yaml(name: &str, app: &str, interval: &str, spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  interval: {interval}
{spec_extra}
"#
    )
}

/// A bare busybox pod on the host network labelled `app=<app>`, whose container `app` runs
/// `sh -c <script>`.
pub fn busybox_pod(name: &str, app: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
{}"#,
        busybox_spec("  ", script)
    )
}

/// A Deployment of `replicas` busybox pods labelled `app=<app>` on the host network, whose
/// container `app` runs `sh -c <script>`.
pub fn busybox_deployment(name: &str, app: &str, replicas: u32, script: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
{}"#,
        busybox_spec("      ", script)
    )
}

/// The pod spec of [`busybox_pod`] and [`busybox_deployment`], each line indented by `indent`.
fn busybox_spec(indent: &str, script: &str) -> String {
    [
        "hostNetwork: true".to_string(),
        "terminationGracePeriodSeconds: 1".to_string(),
        "containers:".to_string(),
        "- name: app".to_string(),
        "  image: localhost/busybox:local".to_string(),
        "  imagePullPolicy: Never".to_string(),
        format!("  command: [sh, -c, \"{script}\"]"),
    ]
    .iter()
    .map(|line| format!("{indent}{line}\n"))
    .collect()
}

/// Applies a watch and waits until the operator has seen it (status.observedGeneration), so
/// pods created afterwards meet a webhook that knows it.
pub async fn apply_watch(ns: &TestNamespace, yaml: &str, name: &str) -> anyhow::Result<()> {
    ns.apply_yaml(yaml).await?;
    wait_for_watch(
        ns,
        name,
        &format!("the operator to observe watch {name}"),
        Duration::from_secs(30),
        |pw| (pw.status.as_ref()?.observed_generation? >= pw.metadata.generation?).then_some(()),
    )
    .await
}

/// Polls the watch (API) until `check` returns `Some`; the text of `seen` describes it.
pub async fn wait_for_watch<T>(
    ns: &TestNamespace,
    name: &str,
    desc: &str,
    timeout: Duration,
    check: impl Fn(&ProcessWatch) -> Option<T>,
) -> anyhow::Result<T> {
    let api: Api<ProcessWatch> = ns.api();
    wait_for(desc, timeout, || async {
        let pw = api.get(name).await?;
        Ok(match check(&pw) {
            Some(v) => Wait::Done(v),
            None => Wait::not_yet(describe_status(&pw)),
        })
    })
    .await
}

/// The status counters and conditions, in one line.
pub fn describe_status(pw: &ProcessWatch) -> String {
    let Some(s) = &pw.status else {
        return "no status".into();
    };
    let conditions: Vec<String> = s
        .conditions
        .iter()
        .map(|c| format!("{}={}({})", c.type_, c.status, c.reason))
        .collect();
    format!(
        "observedGeneration={:?} selected={} attached={} reporting={} processes={} needsRestart={:?} pods=[{}] conditions=[{}]",
        s.observed_generation,
        s.selected_pods,
        s.attached_pods,
        s.reporting_pods,
        s.processes,
        s.needs_restart,
        s.pods
            .iter()
            .map(|p| format!(
                "{}@{}",
                p.name,
                p.reported_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(","),
        conditions.join(" ")
    )
}

/// Whether the webhook gave the pod the agent (a container or native sidecar of that name).
pub fn has_agent(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == AGENT_CONTAINER_NAME)
    })
}

/// The projected token volume of audience `procwatch` the webhook gave the pod.
pub fn agent_token_volume(spec: &PodSpec) -> Option<&Volume> {
    spec.volumes.iter().flatten().find(|v| {
        v.projected.as_ref().is_some_and(|p| {
            p.sources.iter().flatten().any(|s| {
                s.service_account_token
                    .as_ref()
                    .is_some_and(|t| t.audience.as_deref() == Some(TOKEN_AUDIENCE))
            })
        })
    })
}

/// The ID (`containerd://…`) the pod's status gives its container `container`: what the agent
/// must report as that container's `containerID`.
pub fn container_id(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container)?
        .container_id
        .clone()
}

/// In the Flux-style sample's pod `flux`, container `flux2` connects to the broker's unix
/// socket through `reachable` (another container's path to it): the broker, pid `pid`, must
/// answer naming its socket `path`.
pub async fn broker_answers_through(
    ns: &TestNamespace,
    reachable: &str,
    pid: i32,
    path: &str,
) -> anyhow::Result<()> {
    let answer = ns
        .exec(
            "flux",
            "flux2",
            &["procwatch-testprog", "connect", reachable],
        )
        .await?;
    println!("flux2 $ procwatch-testprog connect {reachable}\n{answer}");
    anyhow::ensure!(
        answer == format!("flux-broker pid {pid} on {path}\n"),
        "answer through {reachable}: {answer:?}"
    );
    Ok(())
}

/// The value of the sample `name{labels...}` in Prometheus/OpenMetrics text; every given label
/// must match, others may exist.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let present = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            present.then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_pods_of_a_deployment_are_the_bare_pod() {
        let script = "echo hi; exec sleep 3600";
        let pod: serde_yaml::Value =
            serde_yaml::from_str(&busybox_pod("p", "web", script)).unwrap();
        let deployment: serde_yaml::Value =
            serde_yaml::from_str(&busybox_deployment("d", "web", 2, script)).unwrap();
        assert_eq!(pod["spec"], deployment["spec"]["template"]["spec"]);
        assert_eq!(
            pod["spec"]["containers"][0]["command"][2].as_str(),
            Some(script)
        );
        assert_eq!(pod["spec"]["hostNetwork"].as_bool(), Some(true));
        assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    }

    #[test]
    fn tables_and_metrics_parse() {
        let rows = parse_table(
            "NAME   SELECTED   ATTACHED   REPORTING   PROCESSES   READY   COMPLIANT   INSYNC   AGE\n\
             web    2          2          2           6           True    False                3m\n\
             db     1          1          1           12          True                False    9s\n",
        )
        .unwrap();
        assert_eq!(rows[0]["PROCESSES"], "6");
        assert_eq!(rows[0]["READY"], "True");
        assert_eq!(
            pw_cells(&rows[0]),
            ["web", "2", "2", "2", "6", "True", "False", ""]
        );
        assert_eq!(
            pw_cells(&rows[1]),
            ["db", "1", "1", "1", "12", "True", "", "False"]
        );
        let text = "# TYPE x counter\nprocwatch_reports_total{result=\"accepted\"} 7\n\
                    procwatch_container_processes{namespace=\"a\",watch=\"w\",pod=\"p\",container=\"app\"} 3\n";
        assert_eq!(
            metric_value(text, "procwatch_reports_total", &[("result", "accepted")]),
            Some(7.0)
        );
        assert_eq!(
            metric_value(
                text,
                "procwatch_container_processes",
                &[("pod", "p"), ("container", "app")]
            ),
            Some(3.0)
        );
        assert_eq!(
            metric_value(text, "procwatch_reports_total", &[("result", "x")]),
            None
        );
    }
}
