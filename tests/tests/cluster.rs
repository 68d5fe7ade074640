//! The test cluster runs real shared-PID pods the way procwatch needs them.
//!
//! A Deployment's pod with `shareProcessNamespace: true`, two busybox containers and
//! `hostNetwork: true` reaches Running; from the second container `ps` lists the first one's
//! processes; the container IDs in `/proc/<pid>/cgroup` are those of `status.containerStatuses`;
//! and a projected service-account token with audience `procwatch` passes a TokenReview that
//! names the pod — how the operator's report endpoint authenticates an agent.
//!
//! Needs a cluster (see tests/README.md): the local one of `tests/cluster/up`, or any through
//! KUBECONFIG that has the image `localhost/busybox:local` and allows hostNetwork pods.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use procwatch_e2e::{Cluster, Wait, wait_for};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shared-pid
  labels: {app: shared-pid}
spec:
  replicas: 1
  selector:
    matchLabels: {app: shared-pid}
  template:
    metadata:
      labels: {app: shared-pid}
    spec:
      shareProcessNamespace: true
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:local
        imagePullPolicy: Never
        command: [sleep, "3601"]
      - name: watcher
        image: localhost/busybox:local
        imagePullPolicy: Never
        command: [sleep, "3602"]
        volumeMounts:
        - {name: procwatch-token, mountPath: /var/run/secrets/procwatch, readOnly: true}
      volumes:
      - name: procwatch-token
        projected:
          sources:
          - serviceAccountToken: {audience: procwatch, expirationSeconds: 3600, path: token}
"#;

/// Reads every process's cmdline and cgroup file as the watcher container sees them.
const PROC_DUMP: &str = r#"for p in /proc/[0-9]*; do
  printf '== %s %s\n' "${p#/proc/}" "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)"
  cat "$p/cgroup" 2>/dev/null
done"#;

#[tokio::test]
async fn shared_pid_pod_cgroup_ids_and_projected_token() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    println!("server {}", cluster.server_version().git_version);
    let ns = cluster.namespace("cluster").await?;
    ns.apply_yaml(DEPLOYMENT).await?;

    // Running, both containers ready (scheduler, controller-manager, kubelet, containerd at work).
    let pods = ns.api::<Pod>();
    let pod = wait_for(
        "the shared-pid pod Running with 2 ready containers",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=shared-pid"))
                .await?;
            let Some(pod) = list.items.into_iter().next() else {
                return Ok(Wait::not_yet("no pod yet"));
            };
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .container_statuses
                .iter()
                .flatten()
                .filter(|c| c.ready)
                .count();
            Ok(
                if status.phase.as_deref() == Some("Running") && ready == 2 {
                    Wait::Done(pod)
                } else {
                    Wait::not_yet(format!(
                        "phase {:?}, {ready}/2 containers ready: {:?}",
                        status.phase, status.container_statuses
                    ))
                },
            )
        },
    )
    .await?;
    let pod_name = pod.metadata.name.clone().context("pod name")?;
    let pod_uid = pod.metadata.uid.clone().context("pod uid")?;
    println!("pod {pod_name} uid {pod_uid} Running");

    // The second container sees the first one's processes.
    let ps = ns.exec(&pod_name, "watcher", &["ps"]).await?;
    println!("ps in watcher:\n{ps}");
    ensure!(
        ps.contains("sleep 3601"),
        "the app container's process is not visible from watcher:\n{ps}"
    );
    ensure!(
        ps.contains("sleep 3602"),
        "watcher's own process missing:\n{ps}"
    );
    ensure!(
        ps.contains("pause"),
        "the sandbox's pause (PID 1 of a shared namespace) missing:\n{ps}"
    );

    // Container IDs from /proc/<pid>/cgroup, read inside the pod, against the API's view.
    let statuses: BTreeMap<String, String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let id = c.container_id.unwrap_or_default();
            let bare = id
                .split_once("://")
                .map_or(id.as_str(), |(_, id)| id)
                .to_owned();
            (c.name, bare)
        })
        .collect();
    let dump = ns
        .exec(&pod_name, "watcher", &["sh", "-c", PROC_DUMP])
        .await?;
    let procs = parse_proc_dump(&dump);
    for (container, cmdline) in [("app", "sleep 3601"), ("watcher", "sleep 3602")] {
        let want = statuses
            .get(container)
            .with_context(|| format!("no status for container {container}"))?;
        let (pid, cgroup) = procs
            .iter()
            .find(|(_, (cmd, _))| cmd.trim() == cmdline)
            .map(|(pid, (_, cg))| (pid, cg))
            .with_context(|| format!("no process `{cmdline}` in the dump:\n{dump}"))?;
        let ids = container_ids(cgroup);
        println!("{container}: pid {pid}, containerStatuses id {want}, cgroup ids {ids:?}");
        for line in cgroup
            .lines()
            .filter(|l| l.contains(":memory:") || l.starts_with("0::"))
        {
            println!("  /proc/{pid}/cgroup: {line}");
        }
        ensure!(
            !ids.is_empty(),
            "no container id in /proc/{pid}/cgroup:\n{cgroup}"
        );
        ensure!(
            ids.iter().all(|id| id == want),
            "/proc/{pid}/cgroup of {container} names {ids:?}, containerStatuses says {want}:\n{cgroup}"
        );
    }
    // PID 1 of a shared namespace is the sandbox's pause, in a cgroup of no listed container.
    let (_, pause_cgroup) = procs.get(&1).context("no PID 1 in the pod")?;
    let pause_ids = container_ids(pause_cgroup);
    ensure!(
        pause_ids
            .iter()
            .all(|id| !statuses.values().any(|s| s == id)),
        "pause runs in a container's cgroup: {pause_ids:?}"
    );

    // The projected token (audience procwatch) passes a TokenReview naming this pod.
    let token = ns
        .exec(
            &pod_name,
            "watcher",
            &["cat", "/var/run/secrets/procwatch/token"],
        )
        .await?;
    let review = token_review(&cluster, token.trim(), Some(vec!["procwatch".into()])).await?;
    let status = review.status.context("TokenReview without status")?;
    ensure!(
        status.authenticated == Some(true),
        "token not authenticated: {:?}",
        status.error
    );
    ensure!(
        status.audiences.iter().flatten().any(|a| a == "procwatch"),
        "audiences {:?}",
        status.audiences
    );
    let user = status.user.context("TokenReview without user")?;
    let expected_user = format!("system:serviceaccount:{}:default", ns.name());
    ensure!(
        user.username.as_deref() == Some(expected_user.as_str()),
        "user {:?}",
        user.username
    );
    let extra = user.extra.unwrap_or_default();
    println!("TokenReview user {:?} extra {extra:?}", user.username);
    let one = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
    ensure!(
        one("authentication.kubernetes.io/pod-name").as_deref() == Some(pod_name.as_str()),
        "pod-name in extra: {extra:?}"
    );
    ensure!(
        one("authentication.kubernetes.io/pod-uid").as_deref() == Some(pod_uid.as_str()),
        "pod-uid in extra: {extra:?}"
    );
    // ... and it is useless against the API server itself (agents hold no rights there).
    let api_review = token_review(&cluster, token.trim(), None).await?;
    let api_status = api_review.status.context("TokenReview without status")?;
    if api_status.authenticated == Some(true) {
        bail!(
            "a token with audience procwatch authenticates against the API server's own audience"
        );
    }

    ns.finish();
    Ok(())
}

async fn token_review(
    cluster: &Cluster,
    token: &str,
    audiences: Option<Vec<String>>,
) -> anyhow::Result<TokenReview> {
    let api: kube::Api<TokenReview> = kube::Api::all(cluster.client());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences,
        },
        ..Default::default()
    };
    Ok(api.create(&PostParams::default(), &review).await?)
}

/// `== <pid> <cmdline>` headers each followed by that process's cgroup file.
fn parse_proc_dump(dump: &str) -> BTreeMap<u32, (String, String)> {
    let mut procs = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("== ") {
            let (pid, cmd) = rest.split_once(' ').unwrap_or((rest, ""));
            current = pid.parse().ok();
            if let Some(pid) = current {
                procs.insert(pid, (cmd.to_owned(), String::new()));
            }
        } else if let Some(entry) = current.and_then(|pid| procs.get_mut(&pid)) {
            entry.1.push_str(line);
            entry.1.push('\n');
        }
    }
    procs
}

/// The distinct 64-hex container IDs ending cgroup paths (`/kubepods/besteffort/pod<uid>/<id>`,
/// `/k8s.io/<id>`, `…/cri-containerd-<id>.scope`).
fn container_ids(cgroup: &str) -> Vec<String> {
    let mut ids: Vec<String> = cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter_map(|path| path.rsplit('/').next())
        .map(|last| {
            last.trim_start_matches("cri-containerd-")
                .trim_end_matches(".scope")
        })
        .filter(|last| last.len() == 64 && last.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn container_ids_from_cgroup_lines() {
    let id = "a".repeat(64);
    let cg = format!(
        "9:name=systemd:/kubepods/besteffort/pod1234/{id}\n4:memory:/kubepods/besteffort/pod1234/{id}\n0::/\n"
    );
    assert_eq!(container_ids(&cg), vec![id.clone()]);
    assert_eq!(
        container_ids(&format!("0::/../cri-containerd-{id}.scope\n")),
        vec![id]
    );
    assert!(container_ids("0::/\n1:cpu:/kubepods/besteffort/pod1234\n").is_empty());
}
