//! The three experiments procwatch was made for (README, and the samples in config/samples/),
//! end to end, from the samples a user applies.
//!
//! Each test deploys the operator (`config/overlays/loopback`, see [`Operator`]), applies one
//! sample through the local overlay exactly as the samples' comments say —
//! `kubectl apply -k config/overlays/loopback-samples -l procwatch.dev/sample=<sample>` — and
//! waits for concrete facts in the ProcessWatch status, which only the real path produces: the
//! webhook injected the agent at pod creation, the kubelet and containerd run the pod, the agent
//! read /proc and reported, the operator wrote the status. Then `kubectl get pw` must print the
//! contract's columns with the right counts, and deleting the ProcessWatch must leave the
//! workload running undisturbed.
//!
//! 1. nginx: Debian's nginx (image `localhost/nginx:debian`, tests/images/nginx): the master as
//!    root with args `nginx: master process …`, `worker_processes` workers as www-data and
//!    children of the master, the TCP listener 127.0.0.1:18080, the sha256 of
//!    /etc/nginx/nginx.conf equal to that of tests/images/nginx.conf (the file the image holds),
//!    the pause process in no container.
//! 2. A JobSet-style training job: two pods labelled like JobSet's, each a launcher with two
//!    worker processes whose parent pid is the launcher's, one watch over both.
//! 3. Two Flux-style containers: the broker's four unix sockets under `flux1` with
//!    `reachableAt` = /proc/<pid>/root/<path>, through which `flux2` connects and gets the
//!    broker's answer.
//!
//! Needs the images `localhost/procwatch:dev`, `localhost/nginx:debian` and
//! `localhost/procwatch-testprog:dev` (tests/run makes them; by hand: tests/images/nginx,
//! tests/images/testprog). The tests run one after the other (one operator per cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use procwatch_crds::{
    ContainerReport, ListeningSocket, PodReport, ProcessInfo, ProcessWatch, ProcessWatchStatus,
    SocketProtocol,
};
use procwatch_e2e::processwatch::{
    PW_COLUMNS, broker_answers_through, container_id, has_agent, parse_table, pw_cells,
};
use procwatch_e2e::samples::{REPORT_TIMEOUT, Sample};
use procwatch_e2e::{TestNamespace, Wait, wait_for};
use sha2::{Digest, Sha256};

/// The watches' interval in that overlay.
const INTERVAL: Duration = Duration::from_secs(5);
/// The file tests/images/nginx installs as /etc/nginx/nginx.conf.
const NGINX_CONF: &[u8] = include_bytes!("../images/nginx.conf");
/// The image of the training job and the Flux-style broker (tests/images/testprog).
const TESTPROG_IMAGE: &str = "localhost/procwatch-testprog:dev";

// ---------------------------------------------------------------------------------------------
// 1. nginx

#[tokio::test]
async fn nginx_master_workers_listener_and_config_fingerprint() -> anyhow::Result<()> {
    let (operator, ns, t0, first) = Sample {
        label: "nginx",
        namespace: "nginx",
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

    let conf = String::from_utf8_lossy(NGINX_CONF);
    let workers: usize = directive(&conf, "worker_processes")
        .context("worker_processes in tests/images/nginx.conf")?
        .parse()?;
    let listen = directive(&conf, "listen").context("listen in tests/images/nginx.conf")?;
    let conf_sha = hex(&Sha256::digest(NGINX_CONF));

    let (status, pod) = wait_for(
        "the nginx facts in the status of ProcessWatch web",
        REPORT_TIMEOUT,
        || async {
            let status = watch_status(&ns, "web").await?;
            let pods = ns.live_pods("app=nginx").await?;
            let problems = nginx_problems(&status, &pods, workers, &listen, &conf_sha);
            Ok(if problems.is_empty() {
                Wait::Done((status, pods[0].clone()))
            } else {
                Wait::not_yet(problems.join("; "))
            })
        },
    )
    .await?;
    let report = &status.pods[0];
    let nginx = container(report, "nginx")?;
    print_container(nginx);
    println!(
        "nginx: first report {first:.1}s after apply, all facts {:.1}s after apply",
        t0.elapsed().as_secs_f64()
    );
    print_evictions(&ns).await?;

    // The same file, read in the running container.
    let pod_name = name(&pod);
    let in_pod = ns
        .exec(&pod_name, "nginx", &["sha256sum", "/etc/nginx/nginx.conf"])
        .await?;
    ensure!(
        in_pod.split_whitespace().next() == Some(conf_sha.as_str()),
        "sha256sum in the container: {in_pod}, tests/images/nginx.conf: {conf_sha}"
    );
    // And nginx serves on the listener the status names.
    let page = ns
        .exec(
            &pod_name,
            "nginx",
            &["wget", "-qO-", &format!("http://{listen}/")],
        )
        .await?;
    ensure!(
        page.trim() == "<h1>procwatch nginx experiment</h1>",
        "GET http://{listen}/: {page}"
    );

    expect_columns(&ns, "web", 1, 1 + workers as u64, ["True", "True"]).await?;
    delete_watch_and_check_undisturbed(&ns, "web", "app=nginx").await?;
    ns.finish();
    operator.finish();
    Ok(())
}

fn nginx_problems(
    status: &ProcessWatchStatus,
    pods: &[Pod],
    workers: usize,
    listen: &str,
    conf_sha: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let [pod] = pods else {
        return vec![format!("{} live nginx pods, want 1", pods.len())];
    };
    problems.extend(injection_problems(pod));
    problems.extend(counts_problems(status, 1, 1 + workers as u64));
    let Some(report) = pod_report(status, pod, &mut problems) else {
        return problems;
    };
    problems.extend(container_set_problems(report, &["nginx"]));
    problems.extend(no_pause_problems(report));
    let Some(nginx) = report.containers.iter().find(|c| c.name == "nginx") else {
        return problems;
    };
    if nginx.container_id != container_id(pod, "nginx") {
        problems.push(format!(
            "nginx containerID {:?}, the pod says {:?}",
            nginx.container_id,
            container_id(pod, "nginx")
        ));
    }
    if nginx.process_count != 1 + workers as u32 {
        problems.push(format!(
            "nginx processCount {}, want {}",
            nginx.process_count,
            1 + workers
        ));
    }
    let masters: Vec<&ProcessInfo> = nginx
        .processes
        .iter()
        .filter(|p| p.args.starts_with("nginx: master process"))
        .collect();
    let [master] = masters.as_slice() else {
        problems.push(format!("{} master processes", masters.len()));
        return problems;
    };
    if master.user.as_deref() != Some("root") || master.uid != 0 || master.command != "nginx" {
        problems.push(format!(
            "master: user {:?} uid {} command {}",
            master.user, master.uid, master.command
        ));
    }
    let worker_procs: Vec<&ProcessInfo> = nginx
        .processes
        .iter()
        .filter(|p| p.args == "nginx: worker process")
        .collect();
    if worker_procs.len() != workers {
        problems.push(format!(
            "{} worker processes, want worker_processes {workers}",
            worker_procs.len()
        ));
    }
    for w in &worker_procs {
        if w.user.as_deref() != Some("www-data") || w.uid != 33 || w.ppid != master.pid {
            problems.push(format!(
                "worker {}: user {:?} uid {} ppid {} (master {})",
                w.pid, w.user, w.uid, w.ppid, master.pid
            ));
        }
    }
    // environ of the master holds the end of its process title (nginx writes it over argv and
    // the environment): never reported as a variable.
    for p in &nginx.processes {
        if let Some(bad) = p
            .environment
            .iter()
            .find(|e| e.contains(' ') || e.is_empty())
        {
            problems.push(format!("pid {} has an environment entry {bad:?}", p.pid));
        }
    }
    let want = ListeningSocket {
        protocol: SocketProtocol::Tcp,
        address: Some(listen.to_owned()),
        path: None,
        reachable_at: None,
        pid: Some(master.pid),
    };
    if !nginx.listening.contains(&want) {
        problems.push(format!("listening {:?}, want {want:?}", nginx.listening));
    }
    match nginx
        .files
        .iter()
        .find(|f| f.path == "/etc/nginx/nginx.conf")
    {
        Some(f)
            if f.sha256 == conf_sha && f.size == NGINX_CONF.len() as u64 && f.mode == "0644" => {}
        other => problems.push(format!(
            "fingerprint {other:?}, want sha256 {conf_sha} size {} mode 0644",
            NGINX_CONF.len()
        )),
    }
    // With CAP_SYS_PTRACE the agent reads everything about the root master. The workers'
    // environ and fd/ are owned by www-data with mode 0400/0500, which CAP_SYS_PTRACE does not
    // bypass (CAP_DAC_READ_SEARCH would): those two may be listed, nothing else.
    let worker_pids: BTreeSet<i32> = worker_procs.iter().map(|p| p.pid).collect();
    for entry in &nginx.unreadable {
        let pids = unreadable_pids(entry);
        let about_workers = (entry.starts_with("environ of ")
            || entry.starts_with("open files of "))
            && !pids.is_empty()
            && pids.is_subset(&worker_pids);
        if !about_workers {
            problems.push(format!("unreadable: {entry:?}"));
        }
    }
    match status.summary.as_slice() {
        [s] if s.container == "nginx"
            && s.pods == 1
            && s.processes == 1 + workers as u64
            && s.commands == ["nginx"]
            && s.file_variants.len() == 1
            && s.file_variants[0].path == "/etc/nginx/nginx.conf"
            && s.file_variants[0].variants == 1 => {}
        other => problems.push(format!("summary {other:?}")),
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// 2. A JobSet-style training job

#[tokio::test]
async fn jobset_training_job_process_trees() -> anyhow::Result<()> {
    const SELECTOR: &str = "jobset.sigs.k8s.io/jobset-name=train";
    const WORKERS: usize = 2;
    let (operator, ns, t0, first) = Sample {
        label: "jobset-training",
        namespace: "jobset",
        watch: "train",
        image: TESTPROG_IMAGE,
        make: "tests/images/testprog",
        created: &[
            "processwatch.procwatch.dev/train created",
            "job.batch/train-workers-0 created",
            "job.batch/train-workers-1 created",
        ],
    }
    .start()
    .await?;

    let per_pod = (1 + WORKERS) as u64;
    let (status, pods) = wait_for(
        "the process trees of both training pods in the status of ProcessWatch train",
        REPORT_TIMEOUT,
        || async {
            let status = watch_status(&ns, "train").await?;
            let pods = ns.live_pods(SELECTOR).await?;
            let problems = training_problems(&status, &pods, WORKERS);
            Ok(if problems.is_empty() {
                Wait::Done((status, pods))
            } else {
                Wait::not_yet(problems.join("; "))
            })
        },
    )
    .await?;
    println!(
        "training: first report {first:.1}s after apply, both trees {:.1}s after apply",
        t0.elapsed().as_secs_f64()
    );
    print_evictions(&ns).await?;
    let indexes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| label(p, "jobset.sigs.k8s.io/job-index"))
        .collect();
    ensure!(
        indexes == BTreeSet::from(["0".to_owned(), "1".to_owned()]),
        "job indexes {indexes:?}"
    );

    // The pids and parent pids the agent reported are those `ps` shows in the pod.
    for pod in &pods {
        let pod_name = name(pod);
        let trainer = container(
            pod_report(&status, pod, &mut Vec::new()).context("report")?,
            "trainer",
        )?;
        print_container(trainer);
        let ps = ns
            .exec(&pod_name, "trainer", &["ps", "-o", "pid,ppid,args"])
            .await?;
        let seen: BTreeSet<(i32, i32, String)> = ps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let pid = f.next()?.parse().ok()?;
                let ppid = f.next()?.parse().ok()?;
                let mut args = f.collect::<Vec<_>>().join(" ");
                // busybox ps shows a process's name first when it differs from argv[0].
                if args.starts_with('{')
                    && let Some((_, rest)) = args.split_once("} ")
                {
                    args = rest.to_owned();
                }
                args.starts_with("procwatch-testprog")
                    .then_some((pid, ppid, args))
            })
            .collect();
        let reported: BTreeSet<(i32, i32, String)> = trainer
            .processes
            .iter()
            .map(|p| (p.pid, p.ppid, p.args.clone()))
            .collect();
        // ps shows the launcher's ppid as 0 too: its parent is outside the pod's namespace.
        ensure!(
            seen == reported,
            "pod {pod_name}: ps in the pod shows {seen:?}, the status {reported:?}\n{ps}"
        );
    }

    expect_columns(&ns, "train", 2, 2 * per_pod, NOT_JUDGED).await?;
    delete_watch_and_check_undisturbed(&ns, "train", SELECTOR).await?;
    ns.finish();
    operator.finish();
    Ok(())
}

fn training_problems(status: &ProcessWatchStatus, pods: &[Pod], workers: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if pods.len() != 2 {
        return vec![format!("{} live training pods, want 2", pods.len())];
    }
    let per_pod = (1 + workers) as u64;
    problems.extend(counts_problems(status, 2, 2 * per_pod));
    match status.summary.as_slice() {
        [s] if s.container == "trainer"
            && s.pods == 2
            && s.processes == 2 * per_pod
            && s.commands == ["trainer", "worker"] => {}
        other => problems.push(format!("summary {other:?}")),
    }
    for pod in pods {
        problems.extend(injection_problems(pod));
        let Some(report) = pod_report(status, pod, &mut problems) else {
            continue;
        };
        problems.extend(container_set_problems(report, &["trainer"]));
        problems.extend(no_pause_problems(report));
        let Some(trainer) = report.containers.iter().find(|c| c.name == "trainer") else {
            continue;
        };
        let pod_name = name(pod);
        if trainer.container_id != container_id(pod, "trainer") {
            problems.push(format!(
                "{pod_name}: trainer containerID differs from the pod's"
            ));
        }
        if u64::from(trainer.process_count) != per_pod {
            problems.push(format!(
                "{pod_name}: processCount {}, want {per_pod}",
                trainer.process_count
            ));
        }
        let launchers: Vec<&ProcessInfo> = trainer
            .processes
            .iter()
            .filter(|p| p.command == "trainer")
            .collect();
        let [launcher] = launchers.as_slice() else {
            problems.push(format!("{pod_name}: {} launchers", launchers.len()));
            continue;
        };
        let launcher_args =
            format!("procwatch-testprog trainer --workers {workers} --seconds 3600");
        if launcher.args != launcher_args {
            problems.push(format!("{pod_name}: launcher args {:?}", launcher.args));
        }
        let mut ranks = BTreeSet::new();
        for p in trainer.processes.iter().filter(|p| p.command == "worker") {
            if p.ppid != launcher.pid {
                problems.push(format!(
                    "{pod_name}: worker {} has ppid {}, the launcher is {}",
                    p.pid, p.ppid, launcher.pid
                ));
            }
            let rank = p
                .args
                .strip_prefix("procwatch-testprog worker --rank ")
                .and_then(|r| r.strip_suffix(" --seconds 3600"))
                .and_then(|r| r.parse::<usize>().ok());
            match rank {
                Some(rank) => {
                    ranks.insert(rank);
                }
                None => problems.push(format!("{pod_name}: worker args {:?}", p.args)),
            }
        }
        if ranks != (0..workers).collect::<BTreeSet<_>>() {
            problems.push(format!("{pod_name}: worker ranks {ranks:?}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// 3. Two Flux-style containers

#[tokio::test]
async fn flux_broker_sockets_reachable_from_the_other_container() -> anyhow::Result<()> {
    const SOCKETS: usize = 4;
    let (operator, ns, t0, first) = Sample {
        label: "flux-brokers",
        namespace: "flux",
        watch: "flux",
        image: TESTPROG_IMAGE,
        make: "tests/images/testprog",
        created: &[
            "processwatch.procwatch.dev/flux created",
            "pod/flux created",
        ],
    }
    .start()
    .await?;

    let (status, broker_pid, sockets) = wait_for(
        "the broker's sockets in the status of ProcessWatch flux",
        REPORT_TIMEOUT,
        || async {
            let status = watch_status(&ns, "flux").await?;
            let pods = ns.live_pods("app=flux").await?;
            let (problems, found) = flux_problems(&status, &pods, SOCKETS);
            Ok(match found {
                Some((pid, sockets)) if problems.is_empty() => Wait::Done((status, pid, sockets)),
                _ => Wait::not_yet(problems.join("; ")),
            })
        },
    )
    .await?;
    for c in &status.pods[0].containers {
        print_container(c);
    }
    println!(
        "flux: first report {first:.1}s after apply, all sockets {:.1}s after apply",
        t0.elapsed().as_secs_f64()
    );

    // The run directory is the broker's own, random one, as it told its log.
    let dir = sockets[0]
        .path
        .as_deref()
        .and_then(|p| p.rsplit_once('/'))
        .map(|(dir, _)| dir.to_owned())
        .context("socket path")?;
    let log = ns.kubectl(&["logs", "flux", "-c", "flux1"]).await?;
    ensure!(
        log.contains(&format!("flux-broker pid {broker_pid} listening in {dir}")),
        "the broker's log does not name {dir} and pid {broker_pid}:\n{log}"
    );

    // From flux2, through reachableAt: the broker answers, naming its socket.
    for socket in &sockets {
        let path = socket.path.as_deref().context("path")?;
        let reachable = socket.reachable_at.as_deref().context("reachableAt")?;
        broker_answers_through(&ns, reachable, broker_pid, path).await?;
    }
    // The path itself is in flux1's filesystem, not in flux2's: that is what reachableAt is for.
    let direct = sockets[0].path.as_deref().context("path")?;
    if let Ok(out) = ns
        .exec("flux", "flux2", &["procwatch-testprog", "connect", direct])
        .await
    {
        bail!("{direct} answered in flux2 ({out:?}): it should exist only in flux1");
    }

    expect_columns(&ns, "flux", 1, 2, NOT_JUDGED).await?;
    delete_watch_and_check_undisturbed(&ns, "flux", "app=flux").await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// What is missing, and once the broker and its sockets are there: its pid and the sockets
/// sorted by path.
fn flux_problems(
    status: &ProcessWatchStatus,
    pods: &[Pod],
    sockets: usize,
) -> (Vec<String>, Option<(i32, Vec<ListeningSocket>)>) {
    let mut problems = Vec::new();
    let [pod] = pods else {
        return (vec![format!("{} live flux pods, want 1", pods.len())], None);
    };
    problems.extend(injection_problems(pod));
    problems.extend(counts_problems(status, 1, 2));
    let Some(report) = pod_report(status, pod, &mut problems) else {
        return (problems, None);
    };
    problems.extend(container_set_problems(report, &["flux1", "flux2"]));
    problems.extend(no_pause_problems(report));
    let (Some(flux1), Some(flux2)) = (
        report.containers.iter().find(|c| c.name == "flux1"),
        report.containers.iter().find(|c| c.name == "flux2"),
    ) else {
        return (problems, None);
    };
    for (c, name) in [(flux1, "flux1"), (flux2, "flux2")] {
        if c.container_id != container_id(pod, name) {
            problems.push(format!("{name} containerID differs from the pod's"));
        }
    }
    match flux2.processes.as_slice() {
        [p] if p.args == "sleep infinity" && flux2.listening.is_empty() => {}
        other => problems.push(format!(
            "flux2: processes {other:?}, listening {:?}",
            flux2.listening
        )),
    }
    let Some(broker) = flux1.processes.iter().find(|p| p.command == "flux-broker") else {
        problems.push(format!("no flux-broker in flux1: {:?}", flux1.processes));
        return (problems, None);
    };
    if flux1.process_count != 1
        || broker.args != format!("procwatch-testprog broker --sockets {sockets}")
    {
        problems.push(format!(
            "flux1: processCount {}, broker args {:?}",
            flux1.process_count, broker.args
        ));
    }
    let mut unix: Vec<ListeningSocket> = flux1
        .listening
        .iter()
        .filter(|l| l.protocol == SocketProtocol::Unix)
        .cloned()
        .collect();
    unix.sort_by(|a, b| a.path.cmp(&b.path));
    if unix.len() != sockets {
        problems.push(format!("flux1 lists {} unix sockets: {unix:?}", unix.len()));
        return (problems, None);
    }
    let dir = unix[0]
        .path
        .as_deref()
        .and_then(|p| p.rsplit_once('/'))
        .map(|(d, _)| d.to_owned())
        .unwrap_or_default();
    let random = dir.strip_prefix("/tmp/flux-").unwrap_or("");
    if random.len() != 6 || !random.chars().all(|c| c.is_ascii_alphanumeric()) {
        problems.push(format!("run directory {dir:?} is not /tmp/flux-XXXXXX"));
    }
    for (n, socket) in unix.iter().enumerate() {
        let path = format!("{dir}/local-{n}");
        let want = ListeningSocket {
            protocol: SocketProtocol::Unix,
            address: None,
            path: Some(path.clone()),
            reachable_at: Some(format!("/proc/{}/root{path}", broker.pid)),
            pid: Some(broker.pid),
        };
        if *socket != want {
            problems.push(format!("socket {socket:?}, want {want:?}"));
        }
    }
    (problems, Some((broker.pid, unix)))
}

// ---------------------------------------------------------------------------------------------
// Shared steps

async fn watch_status(ns: &TestNamespace, watch: &str) -> anyhow::Result<ProcessWatchStatus> {
    let pw: ProcessWatch = ns.api::<ProcessWatch>().get(watch).await?;
    Ok(pw.status.unwrap_or_default())
}

/// The pod runs with the agent in a shared process namespace, all containers ready.
fn injection_problems(pod: &Pod) -> Vec<String> {
    let mut problems = Vec::new();
    let pod_name = name(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.share_process_namespace != Some(true) {
        problems.push(format!("{pod_name}: no shareProcessNamespace"));
    }
    if !has_agent(pod) {
        problems.push(format!("{pod_name}: no agent container"));
    }
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.unwrap_or_default();
    if status.phase.as_deref() != Some("Running") || statuses.iter().any(|c| !c.ready) {
        problems.push(format!(
            "{pod_name}: phase {:?}, ready {:?}",
            status.phase,
            statuses
                .iter()
                .map(|c| (&c.name, c.ready))
                .collect::<Vec<_>>()
        ));
    }
    problems
}

fn counts_problems(status: &ProcessWatchStatus, pods: u32, processes: u64) -> Vec<String> {
    let got = (
        status.selected_pods,
        status.attached_pods,
        status.reporting_pods,
        status.processes,
    );
    let mut problems = Vec::new();
    if got != (pods, pods, pods, processes) {
        problems.push(format!(
            "selected/attached/reporting/processes {got:?}, want ({pods}, {pods}, {pods}, {processes})"
        ));
    }
    if !status.needs_restart.is_empty() {
        problems.push(format!("needsRestart {:?}", status.needs_restart));
    }
    if condition(status, "Ready").as_deref() != Some("True") {
        problems.push(format!("Ready {:?}", condition(status, "Ready")));
    }
    problems
}

fn condition(status: &ProcessWatchStatus, kind: &str) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// The status entry of `pod`, if it is there with the pod's uid.
fn pod_report<'a>(
    status: &'a ProcessWatchStatus,
    pod: &Pod,
    problems: &mut Vec<String>,
) -> Option<&'a PodReport> {
    let pod_name = name(pod);
    let report = status.pods.iter().find(|p| p.name == pod_name);
    match report {
        Some(r) if r.uid == pod.metadata.uid => Some(r),
        Some(r) => {
            problems.push(format!("{pod_name}: uid {:?} in the status", r.uid));
            None
        }
        None => {
            problems.push(format!(
                "{pod_name} not in status.pods ({:?})",
                status.pods.iter().map(|p| &p.name).collect::<Vec<_>>()
            ));
            None
        }
    }
}

/// Exactly these containers, the agent not among them.
fn container_set_problems(report: &PodReport, want: &[&str]) -> Vec<String> {
    let got: BTreeSet<&str> = report.containers.iter().map(|c| c.name.as_str()).collect();
    let want: BTreeSet<&str> = want.iter().copied().collect();
    if got == want {
        Vec::new()
    } else {
        vec![format!(
            "{}: containers {got:?}, want {want:?}",
            report.name
        )]
    }
}

/// The sandbox's pause is PID 1 of the shared namespace and belongs to no container.
fn no_pause_problems(report: &PodReport) -> Vec<String> {
    report
        .containers
        .iter()
        .flat_map(|c| c.processes.iter().map(move |p| (c, p)))
        .filter(|(_, p)| p.pid == 1 || p.command == "pause")
        .map(|(c, p)| {
            format!(
                "pause-like process {} ({}) under {}",
                p.pid, p.command, c.name
            )
        })
        .collect()
}

fn container<'a>(report: &'a PodReport, name: &str) -> anyhow::Result<&'a ContainerReport> {
    report
        .containers
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no container {name} in the report of {}", report.name))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(key).cloned()
}

fn print_container(c: &ContainerReport) {
    println!(
        "container {} ({} processes, id {})",
        c.name,
        c.process_count,
        c.container_id.as_deref().unwrap_or("-")
    );
    for p in &c.processes {
        println!(
            "  pid {:>5} ppid {:>5} {:<9} {:<12} threads {} {}",
            p.pid,
            p.ppid,
            p.user.as_deref().unwrap_or("?"),
            p.command,
            p.threads,
            p.args
        );
    }
    for l in &c.listening {
        println!(
            "  listening {:?} {} pid {:?} reachableAt {}",
            l.protocol,
            l.address.as_deref().or(l.path.as_deref()).unwrap_or("-"),
            l.pid,
            l.reachable_at.as_deref().unwrap_or("-")
        );
    }
    for f in &c.files {
        println!(
            "  file {} {} bytes mode {} sha256 {}",
            f.path, f.size, f.mode, f.sha256
        );
    }
    for u in &c.unreadable {
        println!("  unreadable: {u}");
    }
}

/// COMPLIANT and INSYNC of a watch without `expect` and without `collect.files`: kubectl 1.20
/// prints nothing for a condition that is not there.
const NOT_JUDGED: [&str; 2] = ["", ""];

/// `kubectl get pw <watch>` (the real kubectl, the CRD's printer columns) shows the contract's
/// columns with these counts, READY True, and COMPLIANT and INSYNC as `judged`.
async fn expect_columns(
    ns: &TestNamespace,
    watch: &str,
    pods: u32,
    processes: u64,
    judged: [&str; 2],
) -> anyhow::Result<()> {
    let pods = pods.to_string();
    let processes = processes.to_string();
    let want = [
        watch, &pods, &pods, &pods, &processes, "True", judged[0], judged[1],
    ];
    let out = wait_for(
        &format!("kubectl get pw {watch} to show the counts"),
        Duration::from_secs(30),
        || async {
            let out = ns.kubectl(&["get", "pw", watch]).await?;
            let header: Vec<&str> = out
                .lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if header != PW_COLUMNS {
                bail!("kubectl get pw printed the columns {header:?}");
            }
            let rows = parse_table(&out)?;
            Ok(if rows.first().map(pw_cells) == Some(want.to_vec()) {
                Wait::Done(out)
            } else {
                Wait::not_yet(out)
            })
        },
    )
    .await?;
    println!("$ kubectl get pw {watch}\n{out}");
    Ok(())
}

/// Pod name → (uid, phase, container name → restart count), agent included.
type Snapshot = BTreeMap<String, (Option<String>, Option<String>, BTreeMap<String, i32>)>;

async fn snapshot(ns: &TestNamespace, selector: &str) -> anyhow::Result<Snapshot> {
    Ok(ns
        .live_pods(selector)
        .await?
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let restarts = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.restart_count))
                .collect();
            (name(p), (p.metadata.uid.clone(), status.phase, restarts))
        })
        .collect())
}

/// `kubectl delete pw <watch>`; then, after three intervals, the same pods (uids) still run,
/// no container restarted, every container ready.
async fn delete_watch_and_check_undisturbed(
    ns: &TestNamespace,
    watch: &str,
    selector: &str,
) -> anyhow::Result<()> {
    let before = snapshot(ns, selector).await?;
    let out = ns.kubectl(&["delete", "pw", watch]).await?;
    println!("$ kubectl delete pw {watch}\n{out}");
    let watches = ns.api::<ProcessWatch>();
    wait_for(
        &format!("ProcessWatch {watch} gone"),
        Duration::from_secs(60),
        || async {
            Ok(match watches.get_opt(watch).await? {
                None => Wait::Done(()),
                Some(_) => Wait::not_yet("still there"),
            })
        },
    )
    .await?;
    tokio::time::sleep(INTERVAL * 3 + Duration::from_secs(1)).await;
    let after = snapshot(ns, selector).await?;
    ensure!(
        before == after,
        "the workload changed after the watch was deleted:\nbefore {before:?}\nafter  {after:?}"
    );
    for pod in ns.live_pods(selector).await? {
        let problems = injection_problems(&pod);
        ensure!(
            problems.is_empty(),
            "after deleting the watch: {problems:?}"
        );
    }
    println!(
        "{} pod(s) unchanged {}s after the watch was deleted: {before:?}",
        before.len(),
        (INTERVAL * 3).as_secs()
    );
    Ok(())
}

/// Prints the watch's eviction events: how the pods created before their watch (or in its
/// second) were replaced. Not asserted: which pods beat the watch varies from run to run.
async fn print_evictions(ns: &TestNamespace) -> anyhow::Result<()> {
    let events = ns.api::<Event>().list(&ListParams::default()).await?;
    let evicted: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("PodEvicted"))
        .filter_map(|e| e.message.clone())
        .collect();
    println!("{} pod(s) evicted by the watch: {evicted:?}", evicted.len());
    Ok(())
}

/// The pids an `unreadable` entry names: `environ of pids 14, 15: permission denied` → {14, 15}.
fn unreadable_pids(entry: &str) -> BTreeSet<i32> {
    let Some((head, _reason)) = entry.split_once(':') else {
        return BTreeSet::new();
    };
    let list = head
        .split_once(" of pids ")
        .or_else(|| head.split_once(" of pid "))
        .map_or("", |(_, list)| list);
    list.split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// The value of a top-level `name value;` directive of an nginx configuration.
fn directive(conf: &str, name: &str) -> Option<String> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            Some(rest.trim().trim_end_matches(';').trim().to_owned())
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn unreadable_entries_name_their_pids() {
    assert_eq!(
        unreadable_pids("environ of pids 14, 15: permission denied"),
        BTreeSet::from([14, 15])
    );
    assert_eq!(
        unreadable_pids("open files of pid 7: permission denied"),
        BTreeSet::from([7])
    );
    assert!(unreadable_pids("file /etc/x: not found").is_empty());
}

#[test]
fn nginx_conf_directives() {
    let conf = String::from_utf8_lossy(NGINX_CONF);
    assert_eq!(directive(&conf, "worker_processes").as_deref(), Some("2"));
    assert_eq!(
        directive(&conf, "listen").as_deref(),
        Some("127.0.0.1:18080")
    );
    assert_eq!(directive(&conf, "user").as_deref(), Some("www-data"));
}
