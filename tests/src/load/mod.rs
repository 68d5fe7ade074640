//! The load harness behind `procwatch-loadgen`: N pods of W watches on a simulated node, N
//! simulated agents reporting to the deployed operator, and what that costs the operator and
//! the API server ([`Figures`]).
//!
//! A run: a namespace and a simulated node ([`node`]); W watches, each selecting N/W pods by a
//! group label; the N pods created in a burst through the API server (the webhook injects the
//! agent; its admission latency is measured from both sides' histograms); each pod marked
//! running and given a bound token ([`pods`]); the agents started at random offsets within one
//! interval ([`agents`]); once every watch's status counts all its pods, shows each listed pod's
//! pid rate, and one interval more has passed (the listings settle), the steady state is
//! measured for the given duration; then every pod, the node and the namespace are removed.
//!
//! The first pod of the first watch is the probe: its reports alternate one container's
//! process count, so each of its reports changes that watch's status, and the time until the
//! status shows it is the report-to-status latency. The other watches' pods change nothing:
//! their statuses show what the operator writes at rest.

pub mod agents;
pub mod figures;
pub mod node;
pub mod pods;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use procwatch_agent::reporter::ReportClient;
use procwatch_crds::ProcessWatch;

use crate::cluster::{Cluster, TestNamespace};
use crate::operator::operator_metrics;
use crate::processwatch::apply_watch;
use crate::wait::{Wait, wait_for};
use agents::{Agent, Records};
use figures::{
    Figures, Latency, bucket_delta, counter, counter_by, histogram_buckets,
    requests_by_verb_and_resource,
};
use node::SimulatedNode;
use pods::{GROUP_LABEL, SimulatedPod, group_value, pod_name};

/// Requests to the API server at once while creating and preparing the pods.
const BURST_CONCURRENCY: usize = 16;
/// How often the operator's metrics are sampled for its peak memory.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The operator's admission histogram.
const OPERATOR_ADMISSION: &str = "procwatch_admission_duration_seconds";
/// The API server's histogram of webhook calls, and the webhook's name in it.
const APISERVER_ADMISSION: &str = "apiserver_admission_webhook_admission_duration_seconds";
const WEBHOOK_NAME: &str = "pods.procwatch.dev";
/// How many differences between two statuses a write at rest is described by.
const MAX_CHANGES_SHOWN: usize = 8;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub pods: usize,
    pub watches: usize,
    pub interval: Duration,
    /// The steady state measured, once the statuses have settled.
    pub duration: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            pods: 1000,
            watches: 10,
            interval: Duration::from_secs(15),
            duration: Duration::from_secs(300),
        }
    }
}

/// A write of a watch's status, as a watch on the API saw it.
#[derive(Clone, Debug)]
struct StatusEvent {
    at: Instant,
    watch: String,
    bytes: usize,
    processes: u64,
    reporting: u32,
    /// Pods the status lists in detail, and of those the ones showing a pid rate.
    listed: usize,
    listed_with_rate: usize,
    /// What differs from the watch's previous status, as JSON paths with their values.
    changes: Vec<String>,
}

/// Runs the load against the operator deployed in `cluster` and returns the figures. The
/// caller deploys the operator ([`crate::Operator::deploy`]) first.
pub async fn run(cluster: &Cluster, config: &LoadConfig) -> anyhow::Result<Figures> {
    if config.pods == 0 || config.watches == 0 || config.watches > config.pods {
        bail!("needs at least one pod per watch and one watch");
    }
    let ns = cluster.namespace("load").await?;
    let node = SimulatedNode::start(cluster.client(), &format!("{}-node", ns.name())).await?;
    let tokens = token_dir(ns.name());
    std::fs::create_dir_all(&tokens).with_context(|| format!("creating {}", tokens.display()))?;
    let outcome = measure(&ns, &node, &tokens, config).await;
    // Pods on a node without kubelet never finish terminating by themselves: force them.
    let removed = remove_pods(&ns).await;
    let node_removed = node.remove().await;
    let _ = std::fs::remove_dir_all(&tokens);
    let figures = outcome?;
    removed?;
    node_removed?;
    ns.finish();
    Ok(figures)
}

async fn measure(
    ns: &TestNamespace,
    node: &SimulatedNode,
    tokens: &std::path::Path,
    config: &LoadConfig,
) -> anyhow::Result<Figures> {
    let group_sizes: Vec<usize> = (0..config.watches)
        .map(|w| (config.pods + config.watches - 1 - w) / config.watches)
        .collect();
    for group in 0..config.watches {
        let name = group_value(group);
        let yaml = format!(
            "apiVersion: procwatch.dev/v1alpha1\nkind: ProcessWatch\nmetadata: {{name: {name}}}\n\
             spec:\n  selector: {{matchLabels: {{{GROUP_LABEL}: {name}}}}}\n  interval: {}s\n",
            config.interval.as_secs()
        );
        apply_watch(ns, &yaml, &name).await?;
    }
    let statuses = Arc::new(Mutex::new(Vec::<StatusEvent>::new()));
    let status_watch = tokio::spawn(record_statuses(ns.api(), statuses.clone()));
    let peak_rss = Arc::new(Mutex::new(0.0f64));
    let sampler = tokio::spawn(sample_rss(peak_rss.clone()));

    // The burst: every pod created as fast as the API server takes them.
    let client = ns.client();
    let operator_before = operator_metrics().await?;
    let apiserver_before = apiserver_metrics(&client).await?;
    let pods_api: Api<Pod> = ns.api();
    let created: Vec<(usize, Pod)> = futures::stream::iter(0..config.pods)
        .map(|i| {
            let pods_api = pods_api.clone();
            let group = i % config.watches;
            let name = pod_name(group, i / config.watches);
            async move {
                let manifest = pods::pod_manifest(&name, group, node.name())?;
                let pod = pods_api
                    .create(&PostParams::default(), &manifest)
                    .await
                    .with_context(|| format!("creating pod {name}"))?;
                anyhow::Ok((i, pod))
            }
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect()
        .await?;
    let operator_burst = operator_metrics().await?;
    let apiserver_burst = apiserver_metrics(&client).await?;
    let admitted_without_agent = created
        .iter()
        .filter(|(_, pod)| pods::agent_coordinates(pod).is_err())
        .count();
    println!(
        "procwatch-loadgen: {} pods created ({} without the agent)",
        created.len(),
        admitted_without_agent
    );

    // Each pod running, with its token, as the kubelet would leave it.
    let run_id = fastrand::u32(..);
    let accounts: Api<ServiceAccount> = ns.api();
    let recorded = agents::recorded_container()?;
    let prepared: Vec<Agent> = futures::stream::iter(created)
        .map(|(i, pod)| {
            let (pods_api, accounts, recorded) = (&pods_api, &accounts, &recorded);
            async move {
                let group = i % config.watches;
                let coordinates = pods::agent_coordinates(&pod).with_context(|| {
                    format!("pod {}", pod.metadata.name.as_deref().unwrap_or("?"))
                })?;
                let simulated: SimulatedPod =
                    pods::mark_running(pods_api, &pod, run_id, i, group).await?;
                let token = pods::pod_token(accounts, &pod, &coordinates).await?;
                let token_file = agents::write_token(tokens, &simulated.name, &token)?;
                let client =
                    ReportClient::new(&coordinates.report_url, &coordinates.ca_pem, token_file)?;
                anyhow::Ok(Agent {
                    client,
                    report: agents::pod_report(&simulated, ns.name(), recorded),
                    interval: config.interval,
                    start_after: config.interval.mul_f64(fastrand::f64()),
                    probe: i == 0,
                })
            }
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect()
        .await?;
    let records = Arc::new(Records::default());
    let mut agents = tokio::task::JoinSet::new();
    for agent in prepared {
        agents.spawn(agent.run(records.clone()));
    }
    let ramp_started = Instant::now();

    // Until every watch counts all its pods as reporting, as the statuses recorded show
    // (listing the watches again and again would load the API server with their statuses).
    let watches: Api<ProcessWatch> = ns.api();
    let expected: BTreeMap<String, u32> = group_sizes
        .iter()
        .enumerate()
        .map(|(g, n)| (group_value(g), *n as u32))
        .collect();
    let ramp_timeout = config.interval * 4 + Duration::from_millis(50 * config.pods as u64);
    wait_for(
        "every watch to count all its pods as reporting",
        ramp_timeout.max(Duration::from_secs(120)),
        || async {
            let mut reporting = BTreeMap::new();
            for event in lock(&statuses).iter() {
                reporting.insert(event.watch.clone(), event.reporting);
            }
            Ok(if reporting == expected {
                Wait::Done(())
            } else {
                Wait::not_yet(format!("reporting {reporting:?}"))
            })
        },
    )
    .await?;
    let all_reporting = ramp_started.elapsed();
    // A listed pod's first pid rate comes with the first report its watch takes in 10 s or more
    // after the pod's first (not the agent's follow-up a second later), and a watch takes in
    // reports that change nothing only at its periodic reconcile, once per interval: up to two
    // intervals after the pod's first report, later on a busy machine. Waited for as the
    // statuses show it, not guessed from the interval.
    let max_pods = procwatch_crds::ReportLimits::default().max_pods as usize;
    let expected_listed: BTreeMap<String, usize> = group_sizes
        .iter()
        .enumerate()
        .map(|(g, n)| (group_value(g), (*n).min(max_pods)))
        .collect();
    wait_for(
        "every listed pod to show its pid rate",
        config.interval * 4 + Duration::from_secs(30),
        || async {
            let mut latest = BTreeMap::new();
            for event in lock(&statuses).iter() {
                latest.insert(event.watch.clone(), (event.listed, event.listed_with_rate));
            }
            let settled = expected_listed
                .iter()
                .all(|(watch, listed)| latest.get(watch) == Some(&(*listed, *listed)));
            Ok(if settled {
                Wait::Done(())
            } else {
                Wait::not_yet(format!("(listed, with a rate) by watch: {latest:?}"))
            })
        },
    )
    .await?;
    // One interval more: the reports sent meanwhile come back whole or compact as the final
    // listings say, and change nothing a status shows.
    let settle = config.interval;
    println!(
        "procwatch-loadgen: all {} pods reporting {:.1}s after the agents started, every listed pod with its pid rate after {:.1}s; settling for {}s, then steady state for {}s",
        config.pods,
        all_reporting.as_secs_f64(),
        ramp_started.elapsed().as_secs_f64(),
        settle.as_secs(),
        config.duration.as_secs()
    );
    tokio::time::sleep(settle).await;

    let operator_start = operator_metrics().await?;
    let apiserver_start = apiserver_metrics(&client).await?;
    let heartbeats_start = node.heartbeats();
    let steady_from = Instant::now();
    tokio::time::sleep(config.duration).await;
    let operator_end = operator_metrics().await?;
    let apiserver_end = apiserver_metrics(&client).await?;
    let steady_to = Instant::now();
    let heartbeats = node.heartbeats() - heartbeats_start;
    agents.abort_all();
    let reporting_at_end = reporting_by_watch(&watches).await?;
    status_watch.abort();
    sampler.abort();
    let peak_rss_bytes = {
        let sampled = *lock(&peak_rss);
        sampled.max(counter(&operator_end, "process_resident_memory_bytes", &[]))
    };

    let steady_seconds = (steady_to - steady_from).as_secs_f64();
    let in_steady = |at: Instant| at >= steady_from && at <= steady_to;
    let exchanges = lock(&records.exchanges).clone();
    let steady_latencies: Vec<Duration> = exchanges
        .iter()
        .filter(|e| e.outcome == "200" && in_steady(e.sent_at))
        .map(|e| e.took)
        .collect();
    let mut reports_by_outcome = BTreeMap::new();
    for exchange in &exchanges {
        *reports_by_outcome
            .entry(exchange.outcome.clone())
            .or_insert(0) += 1;
    }
    let statuses = lock(&statuses).clone();
    let writes = status_writes(&statuses, steady_from, steady_to, config.watches);
    let probe_group = group_value(0);
    let probe_base = group_sizes[0] as u64
        * pods::CONTAINERS.len() as u64
        * u64::from(agents::PROCESSES_PER_CONTAINER);
    let probe_latencies: Vec<Duration> = lock(&records.probe)
        .iter()
        .filter(|p| in_steady(p.sent_at))
        .filter_map(|p| {
            let expected =
                probe_base + u64::from(p.process_count - agents::PROCESSES_PER_CONTAINER);
            statuses
                .iter()
                .find(|s| {
                    s.watch == probe_group
                        && s.at >= p.sent_at
                        && s.processes == expected
                        && s.reporting as usize == group_sizes[0]
                })
                .map(|s| s.at - p.sent_at)
        })
        .collect();

    let delta = |before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>| {
        after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect::<BTreeMap<_, _>>()
    };
    let requests = |text: &str| {
        requests_by_verb_and_resource(text)
            .into_iter()
            .map(|((verb, resource), n)| (format!("{verb} {resource}"), n))
            .collect::<BTreeMap<_, _>>()
    };
    let token_reviews = |text: &str| {
        counter(
            text,
            "apiserver_request_total",
            &[("resource", "tokenreviews")],
        )
    };
    let admission = |before: &str, after: &str, name: &str, labels: &[(&str, &str)]| {
        Latency::of_histogram(&bucket_delta(
            &histogram_buckets(before, name, labels),
            &histogram_buckets(after, name, labels),
        ))
    };
    Ok(Figures {
        pods: config.pods,
        watches: config.watches,
        interval_seconds: config.interval.as_secs(),
        steady_seconds,
        report_latency: Latency::of(&steady_latencies),
        reports_by_outcome,
        operator_reports_by_result: delta(
            &counter_by(&operator_before, "procwatch_reports_total", "result"),
            &counter_by(&operator_end, "procwatch_reports_total", "result"),
        ),
        operator_cpu_cores: (counter(&operator_end, "process_cpu_seconds_total", &[])
            - counter(&operator_start, "process_cpu_seconds_total", &[]))
            / steady_seconds,
        operator_peak_rss_mib: peak_rss_bytes / (1024.0 * 1024.0),
        status_writes_per_watch_per_second: writes.per_watch_per_second,
        busiest_watch_writes_per_second: writes.busiest_per_second,
        unchanged_status_writes_per_watch_per_second: writes.unchanged_per_watch_per_second,
        min_seconds_between_writes: writes.min_gap.map(|d| d.as_secs_f64()),
        status_bytes_per_second: writes.bytes_per_second,
        unchanged_status_bytes_per_second: writes.unchanged_bytes_per_second,
        unchanged_status_writes: writes.unchanged,
        largest_status_bytes: statuses.iter().map(|s| s.bytes).max().unwrap_or(0),
        operator_status_writes: delta(
            &counter_by(&operator_start, "procwatch_status_writes_total", "result"),
            &counter_by(&operator_end, "procwatch_status_writes_total", "result"),
        ),
        apiserver_requests: delta(&requests(&apiserver_start), &requests(&apiserver_end)),
        harness_requests: [
            ("node lease renewals".to_string(), heartbeats as f64),
            ("node status patches".to_string(), heartbeats as f64),
        ]
        .into(),
        token_reviews_per_second: (token_reviews(&apiserver_end) - token_reviews(&apiserver_start))
            / steady_seconds,
        token_reviews_total: token_reviews(&apiserver_end) - token_reviews(&apiserver_before),
        report_to_status: Latency::of(&probe_latencies),
        admission_operator: admission(&operator_before, &operator_burst, OPERATOR_ADMISSION, &[]),
        admission_apiserver: admission(
            &apiserver_before,
            &apiserver_burst,
            APISERVER_ADMISSION,
            &[("name", WEBHOOK_NAME)],
        ),
        admitted_without_agent,
        pods_reporting: reporting_at_end.values().map(|n| u64::from(*n)).sum(),
    })
}

/// Status writes in the steady state.
struct Writes {
    per_watch_per_second: f64,
    busiest_per_second: f64,
    unchanged_per_watch_per_second: f64,
    min_gap: Option<Duration>,
    bytes_per_second: f64,
    unchanged_bytes_per_second: f64,
    /// Each write of a watch whose pods changed nothing: the watch and what changed.
    unchanged: Vec<String>,
}

/// The writes between `from` and `to` of `watches` watches; the probe's watch (group 0) is
/// the changing one.
fn status_writes(events: &[StatusEvent], from: Instant, to: Instant, watches: usize) -> Writes {
    let seconds = (to - from).as_secs_f64().max(f64::MIN_POSITIVE);
    let steady: Vec<&StatusEvent> = events
        .iter()
        .filter(|e| e.at >= from && e.at <= to)
        .collect();
    let probe = group_value(0);
    let unchanged: Vec<&&StatusEvent> = steady.iter().filter(|e| e.watch != probe).collect();
    let unchanged_watches = watches.saturating_sub(1).max(1) as f64;
    let mut by_watch: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for event in &steady {
        by_watch.entry(&event.watch).or_default().push(event.at);
    }
    let min_gap = by_watch
        .values()
        .flat_map(|times| times.windows(2).map(|w| w[1] - w[0]))
        .min();
    let busiest = by_watch.values().map(Vec::len).max().unwrap_or(0);
    Writes {
        per_watch_per_second: steady.len() as f64 / watches as f64 / seconds,
        busiest_per_second: busiest as f64 / seconds,
        unchanged_per_watch_per_second: unchanged.len() as f64 / unchanged_watches / seconds,
        min_gap,
        bytes_per_second: steady.iter().map(|e| e.bytes).sum::<usize>() as f64 / seconds,
        unchanged_bytes_per_second: unchanged.iter().map(|e| e.bytes).sum::<usize>() as f64
            / seconds,
        unchanged: unchanged
            .iter()
            .map(|e| {
                format!(
                    "{} at +{:.1}s: {}",
                    e.watch,
                    (e.at - from).as_secs_f64(),
                    e.changes.join("; ")
                )
            })
            .collect(),
    }
}

/// `status.reportingPods` of every watch.
async fn reporting_by_watch(watches: &Api<ProcessWatch>) -> anyhow::Result<BTreeMap<String, u32>> {
    Ok(watches
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|pw| {
            let reporting = pw.status.as_ref().map_or(0, |s| s.reporting_pods);
            (pw.metadata.name.unwrap_or_default(), reporting)
        })
        .collect())
}

/// Records every change of a watch's status, with its size, until aborted.
async fn record_statuses(api: Api<ProcessWatch>, into: Arc<Mutex<Vec<StatusEvent>>>) {
    let mut last_version: BTreeMap<String, String> = BTreeMap::new();
    let mut last_status: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = stream.next().await {
        let pw = match event {
            Ok(watcher::Event::Apply(pw) | watcher::Event::InitApply(pw)) => pw,
            Ok(_) => continue,
            Err(error) => {
                eprintln!("procwatch-loadgen: watching the statuses: {error}");
                continue;
            }
        };
        let (Some(name), Some(version), Some(status)) = (
            pw.metadata.name.clone(),
            pw.metadata.resource_version.clone(),
            pw.status.as_ref(),
        ) else {
            continue;
        };
        if last_version.insert(name.clone(), version.clone()).as_ref() == Some(&version) {
            continue;
        }
        let bytes = serde_json::to_vec(status).map_or(0, |b| b.len());
        let json = serde_json::to_value(status).unwrap_or_default();
        let changes = match last_status.get(&name) {
            Some(previous) => figures::json_changes(previous, &json, MAX_CHANGES_SHOWN),
            None => Vec::new(),
        };
        last_status.insert(name.clone(), json);
        lock(&into).push(StatusEvent {
            at: Instant::now(),
            watch: name,
            bytes,
            processes: status.processes,
            reporting: status.reporting_pods,
            listed: status.pods.len(),
            listed_with_rate: status
                .pods
                .iter()
                .filter(|pod| pod.pids_per_minute.is_some())
                .count(),
            changes,
        });
    }
}

/// Samples the operator's resident memory every [`SAMPLE_EVERY`], keeping the largest.
async fn sample_rss(peak: Arc<Mutex<f64>>) {
    loop {
        if let Ok(text) = operator_metrics().await {
            let rss = counter(&text, "process_resident_memory_bytes", &[]);
            let mut peak = lock(&peak);
            *peak = peak.max(rss);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// The API server's `/metrics`.
async fn apiserver_metrics(client: &kube::Client) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(request)
        .await
        .context("GET /metrics of the API server")
}

/// Deletes every pod of the namespace at once (grace period 0): no kubelet would confirm.
async fn remove_pods(ns: &TestNamespace) -> anyhow::Result<()> {
    let pods: Api<Pod> = ns.api();
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
        &ListParams::default(),
    )
    .await
    .context("deleting the simulated pods")?;
    Ok(())
}

/// Where the agents' tokens are written for their clients to read.
fn token_dir(namespace: &str) -> PathBuf {
    std::env::temp_dir().join(format!("procwatch-loadgen-{namespace}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
