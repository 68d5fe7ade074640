//! `procwatch-operator`: wires the caches, the HTTPS server (webhook and report endpoint), the
//! metrics server, leader election and, on the leader, the controller.

use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use procwatch_crds::ProcessWatch;
use procwatch_operator::admission::{self, AdmissionMetrics, AdmissionState, InjectionSettings};
use procwatch_operator::cli::{Cli, LogFormat};
use procwatch_operator::controller::triggers::{PodEvents, Triggers};
use procwatch_operator::controller::{self, MIN_WRITE_INTERVAL, Memory};
use procwatch_operator::health::{self, HealthState, Part, Readiness};
use procwatch_operator::leader::{self, Leadership, LeaseSettings};
use procwatch_operator::metrics::Metrics;
use procwatch_operator::report::{self, ReportState, auth::Authenticator, store::FindingsStore};
use procwatch_operator::tls;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing_subscriber::EnvFilter;

/// How often the webhook's caBundle is checked (a re-applied manifest may have emptied it).
const CA_BUNDLE_RESYNC: Duration = Duration::from_secs(60);
const CA_BUNDLE_RETRY: Duration = Duration::from_secs(10);
/// How often the serving certificate is loaded again (rotated files, a renewed Secret).
const TLS_RELOAD: Duration = Duration::from_secs(300);
/// How long servers and the lease release get after shutdown is asked for.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if let Err(error) = run(cli).await {
        tracing::error!(error = format!("{error:#}"), "procwatch-operator stopped");
        std::process::exit(1);
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in collected logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves once shutdown is asked for (SIGTERM, SIGINT, or a fatal error elsewhere).
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

async fn signals(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    stop.send_replace(true);
}

/// A name unique to this process, so two replicas (even with one host name, as on a host
/// network) never share a lease identity.
fn identity(base: Option<String>) -> String {
    let base = base
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|| "procwatch-operator".into());
    let random = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("{base}_{:08x}", random & 0xffff_ffff)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // One crypto provider for kube's client and our server; an error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (stop, stopped) = watch::channel(false);
    let shutdown = Shutdown(stopped);
    tokio::spawn(signals(stop.clone()));

    let mut config = kube::Config::infer().await.context(
        "cannot configure the Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    // The client would retry 429 and 503 for minutes inside one request: an eviction refused
    // by a PodDisruptionBudget would hold its reconcile (and shutdown) that long. Every caller
    // here retries on its own terms instead (requeue, error backoff, the agent's retry).
    config.default_retry = false;
    let client = Client::try_from(config).context("cannot build the Kubernetes client")?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    let native_sidecars = admission::supports_native_sidecars(&version);
    tracing::info!(
        version = %version.git_version,
        native_sidecars,
        "connected to the API server"
    );

    let tls_source = cli.tls_source()?;
    let material = tls::load(client.clone(), &tls_source)
        .await
        .with_context(|| format!("cannot load the serving certificate ({tls_source:?})"))?;
    let (server_config, certificate) =
        tls::reloadable_server_config(&material).context("unusable serving certificate")?;
    tokio::spawn(tls::keep_fresh(
        client.clone(),
        tls_source.clone(),
        certificate.clone(),
        TLS_RELOAD,
    ));
    if !cli.webhook_configuration.is_empty() {
        tokio::spawn(keep_ca_bundle(
            client.clone(),
            cli.webhook_configuration.clone(),
            certificate.clone(),
        ));
    }
    let settings = InjectionSettings {
        agent_image: cli.agent_image.clone(),
        image_pull_policy: cli.agent_image_pull_policy.clone(),
        report_url: cli.report_url.clone(),
        native_sidecars,
        token_expiration_seconds: cli.agent_token_expiration_seconds,
    };
    settings
        .validate()
        .context("invalid agent injection settings (--agent-token-expiration-seconds)")?;

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let admission_metrics = Arc::new(AdmissionMetrics::register(&mut registry));
    let registry = Arc::new(registry);
    let readiness = Arc::new(Readiness::default());
    let memory = Arc::new(Memory::default());
    let findings = FindingsStore::default();
    let triggers = Triggers::default();

    // One cache of ProcessWatches (webhook, report endpoint, pod mapping) and one of pods.
    let (watches, watch_writer) = reflector::store::<ProcessWatch>();
    let watch_stream = watcher(
        Api::<ProcessWatch>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(watch_writer);
    tokio::spawn(follow_watches(
        watch_stream,
        memory.clone(),
        metrics.clone(),
        readiness.clone(),
    ));
    let (pods, pod_writer) = reflector::store::<Pod>();
    {
        let readiness = readiness.clone();
        let mut pod_events = PodEvents::new(triggers.clone(), watches.clone(), findings.clone());
        let client = client.clone();
        tokio::spawn(async move {
            // Pods are mapped to watches from the start: wait for the watches first.
            readiness.wait_for(&[Part::WatchesSynced]).await;
            let stream = watcher(
                Api::<Pod>::all(client),
                watcher::Config::default().any_semantic(),
            )
            .default_backoff()
            // Managed fields are most of a pod's size and never read here.
            .modify(|pod| pod.managed_fields_mut().clear())
            .reflect(pod_writer);
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        pod_events.handle(&event);
                        let first_sync = matches!(event, watcher::Event::InitDone)
                            && !readiness.is_set(Part::PodsSynced);
                        if first_sync {
                            readiness.set(Part::PodsSynced);
                            tracing::info!("pod cache synced");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
                }
            }
        });
    }

    let (leadership_sender, leadership) = Leadership::channel();
    let identity = identity(cli.leader_election_identity.clone());
    let lease_settings = LeaseSettings::new(
        cli.namespace.clone(),
        cli.leader_election_lease.clone(),
        identity.clone(),
    );
    tracing::info!(lease = %lease_settings.name, namespace = %lease_settings.namespace, %identity, "joining the leader election");
    let (release, released) = oneshot::channel::<()>();
    let mut elector = tokio::spawn(leader::run(
        Api::<Lease>::namespaced(client.clone(), &cli.namespace),
        lease_settings,
        leadership_sender,
        async move {
            let _ = released.await;
        },
    ));

    let app = admission::router(AdmissionState {
        watches: watches.clone(),
        readiness: readiness.clone(),
        settings: Arc::new(settings),
        certificate,
        metrics: admission_metrics,
    })
    .merge(report::router(ReportState {
        authenticator: Arc::new(Authenticator::new(
            client.clone(),
            cli.token_review_cache_ttl(),
            cli.token_review_cache_size,
        )),
        watches: watches.clone(),
        pods: pods.clone(),
        findings: findings.clone(),
        triggers: triggers.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        max_body_bytes: cli.max_report_bytes,
    }));
    let https_listener = TcpListener::bind(cli.https_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--https-addr)", cli.https_addr))?;
    let https = tokio::spawn(tls::serve_listener(
        https_listener,
        server_config,
        app,
        shutdown.wait(),
    ));
    readiness.set(Part::HttpsListening);

    let metrics_listener = TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", cli.metrics_addr))?;
    tracing::info!(address = %cli.metrics_addr, "serving /metrics, /healthz and /readyz");
    let health_app = health::router(HealthState {
        registry,
        readiness: readiness.clone(),
        leadership: leadership.clone(),
    });
    let health_server = tokio::spawn(
        axum::serve(metrics_listener, health_app)
            .with_graceful_shutdown(shutdown.wait())
            .into_future(),
    );

    let mut waiting = leadership.clone();
    let leading = tokio::select! {
        () = waiting.acquired() => true,
        () = shutdown.wait() => false,
        ended = &mut elector => {
            stop.send_replace(true);
            bail!("leader election ended: {}", describe(ended));
        }
    };
    let mut lost = None;
    if leading {
        // A status computed from half-filled caches would be wrong; they sync in seconds.
        tokio::select! {
            () = readiness.wait_for(&[Part::WatchesSynced, Part::PodsSynced]) => {}
            () = shutdown.wait() => {}
        }
        tracing::info!("leading: starting the controller");
        let ctx = Arc::new(controller::Context {
            client: client.clone(),
            pods,
            findings,
            metrics,
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "procwatch-operator".into(),
                    instance: Some(identity),
                },
            ),
            memory,
            settings: controller::Settings {
                status_budget_bytes: cli.status_budget_bytes,
                min_write_interval: MIN_WRITE_INTERVAL,
            },
            leading_since: std::time::Instant::now(),
        });
        let mut watching = leadership.clone();
        let overdue = {
            let stopping = shutdown.wait();
            async move {
                stopping.await;
                tokio::time::sleep(STOP_TIMEOUT).await;
            }
        };
        tokio::select! {
            () = controller::run(ctx, triggers, shutdown.wait()) => {}
            () = overdue => tracing::warn!("reconciles still running {STOP_TIMEOUT:?} after shutdown; leaving them"),
            () = watching.lost() => {
                // Stop writing at once: another replica may lead already.
                stop.send_replace(true);
                lost = Some(describe((&mut elector).await));
            }
        }
    }
    stop.send_replace(true);
    // The controller has stopped: let a successor take over without waiting for expiry.
    let _ = release.send(());
    let stopping = async {
        if lost.is_none() {
            let _ = elector.await;
        }
        if let Ok(Err(error)) = https.await {
            tracing::warn!(%error, "HTTPS server stopped with an error");
        }
        if let Ok(Err(error)) = health_server.await {
            tracing::warn!(%error, "metrics server stopped with an error");
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
        tracing::warn!("shutdown took longer than {STOP_TIMEOUT:?}; exiting anyway");
    }
    match lost {
        Some(why) => bail!("stepped down: {why}; exiting so a fresh process rejoins the election"),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

fn describe(ended: Result<Result<(), leader::LeaderError>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "stopped".into(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => format!("the election task failed: {error}"),
    }
}

/// Follows ProcessWatch events (the reflector keeps the cache) to forget deleted watches.
async fn follow_watches(
    stream: impl futures::Stream<Item = Result<watcher::Event<ProcessWatch>, watcher::Error>>,
    memory: Arc<Memory>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) {
    let key = |watch: &ProcessWatch| (watch.namespace().unwrap_or_default(), watch.name_any());
    let mut relisted = HashSet::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Delete(watch)) => {
                let (namespace, name) = key(&watch);
                memory.forget(&namespace, &name);
                metrics.forget_watch(&namespace, &name);
            }
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(watch)) => {
                relisted.insert(key(&watch));
            }
            // Watches deleted while the watch stream was down get no Delete event.
            Ok(watcher::Event::InitDone) => {
                memory.retain(&relisted);
                metrics.retain_watches(&relisted);
                if !readiness.is_set(Part::WatchesSynced) {
                    readiness.set(Part::WatchesSynced);
                    tracing::info!(watches = relisted.len(), "ProcessWatch cache synced");
                }
            }
            Ok(watcher::Event::Apply(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "ProcessWatch watch failed (is the CRD installed?); retrying")
            }
        }
    }
}

/// Keeps the webhook configuration's caBundle equal to the CA of the certificate served now.
async fn keep_ca_bundle(
    client: Client,
    webhook_configuration: String,
    certificate: tls::CertificateHandle,
) {
    loop {
        let ca_pem = certificate.material().ca_pem;
        let pause = match tls::sync_ca_bundle(client.clone(), &webhook_configuration, &ca_pem).await
        {
            Ok(()) => CA_BUNDLE_RESYNC,
            Err(error) => {
                tracing::warn!(
                    %webhook_configuration,
                    %error,
                    "cannot set the webhook's caBundle; pods are admitted without the agent until it is set"
                );
                CA_BUNDLE_RETRY
            }
        };
        tokio::time::sleep(pause).await;
    }
}
