//! `kubectl procwatch`, the kubectl plugin, on the test cluster with the nginx and Flux-style
//! samples: run through kubectl (which finds `kubectl-procwatch` on PATH, as tests/run sets
//! it), compared with what `kubectl exec … ps` and the other container see.
//!
//! Needs the images `localhost/procwatch:dev`, `localhost/nginx:debian` and
//! `localhost/procwatch-testprog:dev` (tests/run makes them). The tests run one after the
//! other (one operator per cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, ensure};
use procwatch_crds::{ProcessWatch, SocketProtocol};
use procwatch_e2e::plugin::{kubectl_procwatch, kubectl_procwatch_ok, require_plugin, table_rows};
use procwatch_e2e::processwatch::{broker_answers_through, wait_for_watch};
use procwatch_e2e::{Cluster, KubeconfigSource, Operator, TestNamespace, repo_root};

/// The local overlay of the samples, relative to the repository root.
const OVERLAY: &str = "config/overlays/loopback-samples";
/// Pods start, get their agent and report within this.
const REPORT_TIMEOUT: Duration = Duration::from_secs(180);

/// The operator, a fresh namespace with one sample applied, the plugin on PATH.
async fn start(sample: &str, namespace: &str) -> anyhow::Result<(Operator, TestNamespace)> {
    let cluster = Cluster::connect().await?;
    require_plugin(&cluster).await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace(namespace).await?;
    let overlay = repo_root().join(OVERLAY);
    let selector = format!("procwatch.dev/sample={sample}");
    ns.kubectl(&["apply", "-k", &overlay.to_string_lossy(), "-l", &selector])
        .await?;
    Ok((operator, ns))
}

/// Waits until the watch is Ready with `processes` processes in its detail.
async fn wait_ready(ns: &TestNamespace, watch: &str, processes: usize) -> anyhow::Result<()> {
    wait_for_watch(
        ns,
        watch,
        &format!("ProcessWatch {watch} Ready with {processes} processes in the detail"),
        REPORT_TIMEOUT,
        |pw: &ProcessWatch| {
            let status = pw.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let listed: usize = status
                .pods
                .iter()
                .flat_map(|p| &p.containers)
                .map(|c| c.processes.len())
                .sum();
            (ready && listed == processes).then_some(())
        },
    )
    .await
}

/// `kubectl procwatch ARGS` on a pseudo-terminal of `columns` columns (util-linux `script`);
/// what it printed, without the terminal's carriage returns.
async fn on_a_terminal(ns: &TestNamespace, columns: u16, args: &str) -> anyhow::Result<String> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let command = format!(
        "stty rows 24 cols {columns}; {kubectl} procwatch {args} -n {}",
        ns.name()
    );
    let mut script = tokio::process::Command::new("script");
    if let KubeconfigSource::Local(path) = ns.cluster().source() {
        script.env("KUBECONFIG", path);
    }
    let out = script
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("COLUMNS")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running script (util-linux) for a pseudo-terminal")?;
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    ensure!(
        out.status.success(),
        "{command}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "$ kubectl procwatch {args} -n {}   # on a {columns}-column terminal\n{text}",
        ns.name()
    );
    Ok(text)
}

#[tokio::test]
async fn plugin_ps_tree_and_create_on_the_nginx_sample() -> anyhow::Result<()> {
    let (operator, ns) = start("nginx", "plugin-nginx").await?;
    // The master and worker_processes 2 (tests/images/nginx.conf).
    wait_ready(&ns, "web", 3).await?;
    let [pod] = ns
        .live_pods("app=nginx")
        .await?
        .try_into()
        .ok()
        .context("one nginx pod")?;
    let pod_name = pod.metadata.name.clone().context("pod name")?;

    // The master as root, the two workers as www-data, under the right pod and container.
    let out = kubectl_procwatch_ok(&ns, &["ps", "web"]).await?;
    let rows = table_rows(&out);
    ensure!(rows.len() == 3, "3 rows expected:\n{out}");
    for row in &rows {
        ensure!(
            row["POD"] == pod_name && row["CONTAINER"] == "nginx",
            "{row:?}"
        );
    }
    let master = rows
        .iter()
        .find(|r| r["COMMAND"].starts_with("nginx: master process"))
        .context("no master row")?;
    ensure!(master["USER"] == "root", "master {master:?}");
    let workers: Vec<_> = rows
        .iter()
        .filter(|r| r["COMMAND"] == "nginx: worker process")
        .collect();
    ensure!(workers.len() == 2, "workers {workers:?}");
    for w in &workers {
        ensure!(
            w["USER"] == "www-data" && w["PPID"] == master["PID"],
            "worker {w:?}"
        );
    }

    // The same pids and users as `ps` inside the pod, compared by program.
    let ps = ns
        .exec(&pod_name, "nginx", &["ps", "-o", "pid,user,args"])
        .await?;
    println!("$ kubectl exec {pod_name} -c nginx -- ps -o pid,user,args\n{ps}");
    let in_pod: BTreeSet<(String, String, String)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (pid, user) = (f.next()?, f.next()?);
            let args = f.collect::<Vec<_>>().join(" ");
            args.starts_with("nginx:")
                .then(|| (pid.to_string(), user.to_string(), args))
        })
        .collect();
    let from_plugin: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| (r["PID"].clone(), r["USER"].clone(), r["COMMAND"].clone()))
        .collect();
    ensure!(
        in_pod == from_plugin,
        "ps in the pod: {in_pod:?}\nkubectl procwatch ps: {from_plugin:?}"
    );

    // --tree: the workers right under the master, marked as its children.
    let tree = kubectl_procwatch_ok(&ns, &["ps", "web", "--tree"]).await?;
    let commands: Vec<String> = table_rows(&tree)
        .iter()
        .map(|r| r["COMMAND"].clone())
        .collect();
    ensure!(
        commands
            == [
                master["COMMAND"].clone(),
                "\\_ nginx: worker process".into(),
                "\\_ nginx: worker process".into()
            ],
        "tree:\n{tree}"
    );
    let lines: Vec<&str> = tree.lines().collect();
    ensure!(
        lines[2].ends_with("    \\_ nginx: worker process"),
        "workers indented under the master:\n{tree}"
    );

    // To a terminal, lines are cut to its width, as ps does; to a pipe (above), never.
    let narrow = on_a_terminal(&ns, 60, "ps web").await?;
    ensure!(
        narrow.lines().all(|l| l.chars().count() <= 60)
            && out.lines().any(|l| l.chars().count() > 60)
            && narrow.lines().next() == out.lines().next().map(|l| &l[..60]),
        "on a 60-column terminal:\n{narrow}"
    );
    let wide = on_a_terminal(&ns, 60, "ps web -o wide").await?;
    ensure!(
        wide.lines()
            .any(|l| l.ends_with("nginx: master process nginx")),
        "-o wide on a 60-column terminal:\n{wide}"
    );

    kubectl_procwatch_ok(&ns, &["files", "web"]).await?;
    kubectl_procwatch_ok(&ns, &["top", "--containers"]).await?;

    // A watch that does not exist: kubectl's message and exit code 1.
    let missing = kubectl_procwatch(&ns, &["ps", "nope"]).await?;
    ensure!(
        missing.status.code() == Some(1)
            && missing.stderr.trim() == "error: processwatches.procwatch.dev \"nope\" not found",
        "{missing:?}"
    );

    // A second watch for the same Deployment, from the plugin's YAML through kubectl apply.
    let cluster = ns.cluster();
    let mut create = cluster.kubectl_plugin_command("procwatch");
    create.args([
        "create",
        "web2",
        "--for",
        "deployment/web",
        "--dry-run=client",
        "-o",
        "yaml",
        "-n",
        ns.name(),
    ]);
    let created = create.output().await?;
    let yaml = String::from_utf8(created.stdout)?;
    let advice = String::from_utf8(created.stderr)?;
    println!(
        "$ kubectl procwatch create web2 --for deployment/web --dry-run=client -o yaml -n {}\n{yaml}{advice}",
        ns.name()
    );
    ensure!(created.status.success(), "create failed: {advice}");
    ensure!(
        advice.trim() == "1 of 1 pods of deployment/web already run the agent: no restart needed.",
        "{advice}"
    );
    let printed: ProcessWatch = serde_yaml::from_str(&yaml)?;
    let deployment: k8s_openapi::api::apps::v1::Deployment = ns.api().get("web").await?;
    ensure!(
        Some(printed.spec.selector.clone()) == deployment.spec.map(|s| s.selector),
        "selector {:?}",
        printed.spec.selector
    );
    let mut apply = cluster.kubectl_command();
    apply
        .args(["apply", "-n", ns.name(), "-f", "-"])
        .stdin(std::process::Stdio::piped());
    let mut child = apply.stdout(std::process::Stdio::piped()).spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(yaml.as_bytes()).await?;
    }
    let applied = child.wait_with_output().await?;
    ensure!(applied.status.success(), "kubectl apply -f -: {applied:?}");
    println!(
        "$ … | kubectl apply -f -\n{}",
        String::from_utf8_lossy(&applied.stdout)
    );
    wait_ready(&ns, "web2", 3).await?;
    kubectl_procwatch_ok(&ns, &["ps"]).await?;

    // Without --dry-run the plugin creates the watch; a second time, kubectl's AlreadyExists.
    let args = [
        "create",
        "web3",
        "--for",
        "deploy/web",
        "--file",
        "/etc/nginx/nginx.conf",
    ];
    let out = kubectl_procwatch_ok(&ns, &args).await?;
    ensure!(out == "processwatch.procwatch.dev/web3 created\n", "{out}");
    let web3: ProcessWatch = ns.api().get("web3").await?;
    ensure!(
        web3.spec.collect.files == ["/etc/nginx/nginx.conf"],
        "{:?}",
        web3.spec
    );
    wait_ready(&ns, "web3", 3).await?;
    let again = kubectl_procwatch(&ns, &args).await?;
    ensure!(
        again.status.code() == Some(1)
            && again.stderr.trim() == "error: processwatches.procwatch.dev \"web3\" already exists",
        "{again:?}"
    );
    let no_workload = kubectl_procwatch(&ns, &["create", "x", "--for", "deployment/nope"]).await?;
    ensure!(
        no_workload.status.code() == Some(1)
            && no_workload.stderr.trim() == "error: deployments.apps \"nope\" not found",
        "{no_workload:?}"
    );

    let version = kubectl_procwatch_ok(&ns, &["version"]).await?;
    ensure!(
        version.starts_with(&format!(
            "kubectl-procwatch: {}\n",
            env!("CARGO_PKG_VERSION")
        )) && version.contains(
            "(deployment procwatch-system/procwatch-operator, image localhost/procwatch:dev)"
        ),
        "{version}"
    );
    ns.finish();
    operator.finish();
    Ok(())
}

#[tokio::test]
async fn plugin_sockets_on_the_flux_sample_reachable_from_the_other_container() -> anyhow::Result<()>
{
    let (operator, ns) = start("flux-brokers", "plugin-flux").await?;
    // The broker's four unix sockets, then: the broker and flux2's sleep.
    wait_for_watch(
        &ns,
        "flux",
        "the broker's 4 unix sockets in ProcessWatch flux",
        REPORT_TIMEOUT,
        |pw: &ProcessWatch| {
            let pod = pw.status.as_ref()?.pods.first()?;
            let flux1 = pod.containers.iter().find(|c| c.name == "flux1")?;
            let unix = flux1
                .listening
                .iter()
                .filter(|l| l.protocol == SocketProtocol::Unix)
                .count();
            (unix == 4).then_some(())
        },
    )
    .await?;

    let out = kubectl_procwatch_ok(&ns, &["sockets", "flux"]).await?;
    let rows = table_rows(&out);
    ensure!(rows.len() == 4, "4 sockets expected:\n{out}");
    let mut paths = BTreeSet::new();
    for row in &rows {
        let want: BTreeMap<&str, &str> = [
            ("POD", "flux"),
            ("CONTAINER", "flux1"),
            ("PROTO", "Unix"),
            ("PROGRAM", "flux-broker"),
        ]
        .into();
        for (column, value) in want {
            ensure!(row[column] == value, "{column} in {row:?}");
        }
        let (path, pid, reachable) = (&row["ADDRESS/PATH"], &row["PID"], &row["REACHABLE-AT"]);
        ensure!(*reachable == format!("/proc/{pid}/root{path}"), "{row:?}");
        broker_answers_through(&ns, reachable, pid.parse()?, path).await?;
        paths.insert(path.clone());
    }
    ensure!(paths.len() == 4, "{paths:?}");
    kubectl_procwatch_ok(&ns, &["ps", "flux", "--tree"]).await?;
    kubectl_procwatch_ok(&ns, &["top"]).await?;
    ns.finish();
    operator.finish();
    Ok(())
}
